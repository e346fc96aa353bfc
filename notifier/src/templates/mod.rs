//! Notification templates (minijinja): the built-in defaults written from the seed plan, each
//! replaceable by a file of the same name in an override directory, rendered in strict mode so
//! that an unknown variable is an error naming the template, the line and the variable.
//!
//! Templates: `statuspage_title.txt`, `statuspage_body.txt`, `email_subject.txt`,
//! `email_body.txt`, `email_body.html`. `.html` templates are HTML-autoescaped. Titles and
//! subjects render to one trimmed line. An absent optional value (`eta`, `runbook`, …) renders
//! as nothing.

mod context;
mod defaults;
mod error;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

pub use context::{Context, IncidentInfo, Recipient, UpdateInfo};
pub use defaults::{EMAIL_HTML, EMAIL_SUBJECT, EMAIL_TEXT, STATUSPAGE_BODY, STATUSPAGE_TITLE};
pub use error::{Origin, TemplateError, TemplateErrors};

/// Override files larger than this are refused (a template is a page of text).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The status page incident's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentText {
    /// The incident's title (one line).
    pub title: String,
    /// The incident's body.
    pub body: String,
}

/// One customer email's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailText {
    /// The subject (one line).
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// The loaded templates: defaults, with overrides applied. Cheap to share (`Arc` it).
pub struct Templates {
    env: Environment<'static>,
    origins: BTreeMap<&'static str, Origin>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Loads the built-in templates, replacing each by `<override_dir>/<name>` when that file
    /// exists. A file in the directory that is no known template is an error (subdirectories
    /// are ignored). Every problem found (unreadable file, syntax error) is reported.
    pub fn load(override_dir: Option<&Path>) -> Result<Templates, TemplateErrors> {
        let mut problems = Vec::new();
        let mut sources: Vec<(&'static str, String, Origin)> = DEFAULTS_LIST
            .iter()
            .map(|(name, src)| (*name, (*src).to_string(), Origin::Builtin))
            .collect();
        if let Some(dir) = override_dir {
            read_overrides(dir, &mut sources, &mut problems);
        }

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_debug(true);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(format_value);
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters are valid");
        env.set_syntax(syntax);

        let mut origins = BTreeMap::new();
        for (name, src, origin) in sources {
            if let Err(e) = env.add_template_owned(name, src) {
                problems.push(convert(&e, name, &origin));
            }
            origins.insert(name, origin);
        }
        if problems.is_empty() {
            Ok(Templates { env, origins })
        } else {
            Err(TemplateErrors(problems))
        }
    }

    /// The template names, in a stable order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        DEFAULTS_LIST.iter().map(|(n, _)| *n)
    }

    /// Where a template's source came from, or `None` for an unknown name.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.origins.get(name)
    }

    /// Sample data for `drbot notify preview <name>`: every optional value set; `recipient`
    /// only for email templates.
    pub fn sample_context(name: &str) -> Context {
        let mut ctx = Context::sample();
        if !defaults::is_email(name) {
            ctx.recipient = None;
        }
        ctx
    }

    /// Renders one template.
    pub fn render(&self, name: &str, ctx: &Context) -> Result<String, TemplateError> {
        let Some(origin) = self.origins.get(name) else {
            return Err(TemplateError::UnknownTemplate {
                name: name.to_string(),
                known: known_names(),
            });
        };
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| convert(&e, name, origin))?;
        let out = tmpl
            .render(Serde(ctx))
            .map_err(|e| self.convert_render(&e, name))?;
        Ok(if defaults::is_single_line(name) {
            out.split_whitespace().collect::<Vec<_>>().join(" ")
        } else {
            out
        })
    }

    /// Renders the status page incident's title and body.
    pub fn incident_text(&self, ctx: &Context) -> Result<IncidentText, TemplateError> {
        Ok(IncidentText {
            title: self.render(STATUSPAGE_TITLE, ctx)?,
            // Sections left out (a drill has no "DR activated" line) leave no blank lines.
            body: self.render(STATUSPAGE_BODY, ctx)?.trim().to_string(),
        })
    }

    /// Renders one customer email (subject, text and HTML parts). `ctx.recipient` must be set.
    pub fn email(&self, ctx: &Context) -> Result<EmailText, TemplateError> {
        Ok(EmailText {
            subject: self.render(EMAIL_SUBJECT, ctx)?,
            text: self.render(EMAIL_TEXT, ctx)?,
            html: self.render(EMAIL_HTML, ctx)?,
        })
    }

    /// Renders every template twice: with the full sample and with every optional value absent
    /// (no recipient for non-email templates). Reports every problem, e.g. an unknown variable,
    /// for `check-config`.
    pub fn check_all(&self) -> Result<(), TemplateErrors> {
        let mut problems: Vec<TemplateError> = Vec::new();
        for name in Self::names() {
            let full = Self::sample_context(name);
            let minimal = Context::sample_minimal(defaults::is_email(name));
            for ctx in [&full, &minimal] {
                if let Err(e) = self.render(name, ctx)
                    && !problems.contains(&e)
                {
                    problems.push(e);
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TemplateErrors(problems))
        }
    }

    fn convert_render(&self, e: &minijinja::Error, name: &str) -> TemplateError {
        // An error inside an included template names that template.
        let failing = e.name().unwrap_or(name);
        let origin = self
            .origins
            .get(failing)
            .cloned()
            .unwrap_or(Origin::Builtin);
        convert(e, failing, &origin)
    }
}

/// How `{{ value }}` is written: none as nothing; in HTML, `& < > " '` escaped (URLs stay
/// readable: `/` is left alone, unlike minijinja's default).
fn format_value(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if value.is_none() {
        return Ok(());
    }
    if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() {
        let text = match value.as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(value.to_string()),
        };
        for c in text.chars() {
            match c {
                '&' => out.write_str("&amp;"),
                '<' => out.write_str("&lt;"),
                '>' => out.write_str("&gt;"),
                '"' => out.write_str("&quot;"),
                '\'' => out.write_str("&#39;"),
                c => out.write_char(c),
            }?;
        }
        return Ok(());
    }
    minijinja::escape_formatter(out, state, value)
}

const DEFAULTS_LIST: &[(&str, &str)] = defaults::DEFAULTS;

fn known_names() -> String {
    Templates::names().collect::<Vec<_>>().join(", ")
}

fn read_overrides(
    dir: &Path,
    sources: &mut [(&'static str, String, Origin)],
    problems: &mut Vec<TemplateError>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(TemplateError::OverrideDir {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            });
            return;
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => found.push(entry.path()),
            Err(e) => problems.push(TemplateError::OverrideDir {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }
    found.sort();
    for path in found {
        if path.is_dir() {
            continue;
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name.starts_with('.') {
            continue;
        }
        let Some(slot) = sources.iter_mut().find(|(n, _, _)| *n == file_name) else {
            problems.push(TemplateError::UnknownFile {
                path,
                known: known_names(),
            });
            continue;
        };
        match read_template_file(&path) {
            Ok(src) => {
                slot.1 = src;
                slot.2 = Origin::Override(path);
            }
            Err(reason) => problems.push(TemplateError::Read { path, reason }),
        }
    }
}

fn read_template_file(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "{len} bytes, more than the {MAX_TEMPLATE_BYTES} allowed"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Turns a minijinja error into ours: syntax, unknown variable, or other.
fn convert(e: &minijinja::Error, name: &str, origin: &Origin) -> TemplateError {
    let template = name.to_string();
    let origin = origin.clone();
    let line = e.line();
    match e.kind() {
        ErrorKind::SyntaxError => TemplateError::Syntax {
            template,
            origin,
            line,
            message: e.detail().unwrap_or("invalid syntax").to_string(),
        },
        ErrorKind::UndefinedError => TemplateError::UnknownVariable {
            template,
            origin,
            line,
            variable: undefined_name(e).unwrap_or_else(|| "?".to_string()),
        },
        kind => TemplateError::Render {
            template,
            origin,
            line,
            message: match e.detail() {
                Some(d) => format!("{kind}: {d}"),
                None => kind.to_string(),
            },
        },
    }
}

/// minijinja's detail reads "`incident.nme` is undefined"; fall back to the failing source
/// span.
fn undefined_name(e: &minijinja::Error) -> Option<String> {
    if let Some(detail) = e.detail() {
        let mut parts = detail.split('`');
        if let (Some(_), Some(name), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            return Some(name.to_string());
        }
    }
    let src = e.template_source()?;
    let range = e.range()?;
    src.get(range).map(|s| s.trim().to_string())
}
