//! Template errors: each names the template, where it came from and, when known, the line.

use std::fmt;
use std::path::PathBuf;

/// Where a template's source came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The default embedded in drbot.
    Builtin,
    /// A file in the override directory.
    Override(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::Override(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One template problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The override directory cannot be listed.
    #[error("template directory {}: {reason}", dir.display())]
    OverrideDir {
        /// The directory.
        dir: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// An override file cannot be read (or is not UTF-8, or is too large).
    #[error("template file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// A file in the override directory that is no template drbot knows (a typo would
    /// otherwise be silently ignored).
    #[error("template file {} is not a known template (known: {known})", path.display())]
    UnknownFile {
        /// The file.
        path: PathBuf,
        /// The known template names, comma-separated.
        known: String,
    },
    /// A template name drbot does not have.
    #[error("no template named {name:?} (known: {known})")]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The known template names, comma-separated.
        known: String,
    },
    /// The template does not parse.
    #[error("template {template} ({origin}){}: syntax error: {message}", at_line(*line))]
    Syntax {
        /// The template's name.
        template: String,
        /// Where its source came from.
        origin: Origin,
        /// The line, if known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The template uses a variable (or attribute) the context does not have.
    #[error("template {template} ({origin}){}: unknown variable `{variable}`", at_line(*line))]
    UnknownVariable {
        /// The template's name.
        template: String,
        /// Where its source came from.
        origin: Origin,
        /// The line, if known.
        line: Option<usize>,
        /// The undefined expression, e.g. `incident.nme`.
        variable: String,
    },
    /// Any other rendering failure (a bad filter argument, a type error…).
    #[error("template {template} ({origin}){}: {message}", at_line(*line))]
    Render {
        /// The template's name.
        template: String,
        /// Where its source came from.
        origin: Origin,
        /// The line, if known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

/// Several template problems, all reported at once (loading and `check_all` collect them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateErrors(pub Vec<TemplateError>);

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}
