//! `drbot report <incident:N|run:N> [--out DIR]` and `drbot timeline <incident:N|run:N>`:
//! build the report from the store ([`crate::report`]) and write it, or print its timeline.

use std::{path::Path, process::ExitCode};

use super::text;
use crate::{
    app::App,
    report::{self, Report, Subject},
};

async fn load(app: &App, command: &str, subject: &str) -> anyhow::Result<Result<Report, ExitCode>> {
    let Ok(subject) = subject.parse::<Subject>() else {
        eprintln!("{}", text::report_subject_usage(command, subject));
        return Ok(Err(ExitCode::from(2)));
    };
    match report::build(app, subject).await? {
        Some(r) => Ok(Ok(r)),
        None => {
            eprintln!("{}", text::report_not_found(subject));
            Ok(Err(ExitCode::from(2)))
        }
    }
}

/// `drbot report`. Files that exist are kept unless `force`: the Markdown is where the team
/// writes its lessons learned.
pub async fn write(app: &App, subject: &str, out: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let r = match load(app, "report", subject).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))?;
    let stem = r.subject.file_stem();
    let md = out.join(format!("{stem}.md"));
    let html = out.join(format!("{stem}.html"));
    if !force && let Some(existing) = [&md, &html].into_iter().find(|p| p.exists()) {
        eprintln!("{}", text::report_exists(existing));
        return Ok(ExitCode::from(2));
    }
    std::fs::write(&md, report::markdown::render(&r))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", md.display()))?;
    std::fs::write(&html, report::html::render(&r))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", html.display()))?;
    println!("{}", text::report_written(&md, &html));
    Ok(ExitCode::SUCCESS)
}

/// `drbot timeline`.
pub async fn timeline(app: &App, subject: &str, json: bool) -> anyhow::Result<ExitCode> {
    let r = match load(app, "timeline", subject).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r.timeline)?);
    } else {
        print!("{}", text::timeline(&r.title, &r.timeline));
    }
    Ok(ExitCode::SUCCESS)
}
