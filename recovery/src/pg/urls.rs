//! What drbot reads from a cluster's URL without ever showing its password: the password itself
//! (for a child's `PGPASSWORD` only), libpq conninfo strings and URLs without it, the database
//! and port it names, and scrubbing it out of text.

use crate::{resources::PgClusterDef, step::StepError};

/// The password in the cluster's URL (percent-decoded), for a child's `PGPASSWORD` only.
pub fn password(def: &PgClusterDef) -> Option<String> {
    let url = url::Url::parse(def.url.expose()).ok()?;
    let raw = url.password()?;
    Some(decode(raw))
}

/// The cluster's URL as a libpq `key=value` conninfo **without** the password (pass that in
/// `PGPASSWORD`), e.g. `host='dr-db' port='5432' user='postgres' dbname='postgres'`. Query
/// parameters (`sslmode`, …) are kept; a `password` parameter is dropped.
pub fn conninfo(def: &PgClusterDef) -> Result<String, String> {
    let url = url::Url::parse(def.url.expose()).map_err(|e| {
        format!(
            "the URL of PostgreSQL cluster {} is invalid: {e}",
            def.display()
        )
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "the URL of PostgreSQL cluster {} must start with postgres://",
            def.display()
        ));
    }
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        parts.push(("host".into(), decode(host)));
    }
    if let Some(port) = url.port() {
        parts.push(("port".into(), port.to_string()));
    }
    if !url.username().is_empty() {
        parts.push(("user".into(), decode(url.username())));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        parts.push(("dbname".into(), decode(db)));
    }
    for (k, v) in url.query_pairs() {
        if k != "password" {
            parts.retain(|(key, _)| key != &*k);
            parts.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok(parts
        .iter()
        .map(|(k, v)| format!("{k}='{}'", quote_value(v)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// [`conninfo`] for database `db` of the cluster instead of the one its URL names (password
/// left out: pass it with [`super::PgTool::password_of`]).
pub fn db_conninfo(def: &PgClusterDef, db: &str) -> Result<String, StepError> {
    let base = conninfo(def).map_err(StepError::fatal)?;
    // In a conninfo string a later keyword wins.
    Ok(format!("{base} dbname='{}'", quote_value(db)))
}

/// `postgres://user@host:port/db` for database `db`: the cluster URL without the password
/// (children get it as `PGPASSWORD`).
pub fn db_url_without_password(def: &PgClusterDef, db: &str) -> Result<String, StepError> {
    let mut url = url::Url::parse(def.url.expose()).map_err(|_| {
        StepError::fatal(format!(
            "the URL of PostgreSQL cluster {} is invalid",
            def.display()
        ))
    })?;
    let _ = url.set_password(None);
    url.set_path(&format!("/{db}"));
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "password")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(url.to_string())
}

/// The database named in the cluster's URL (`postgres` when it names none).
pub fn url_database(def: &PgClusterDef) -> String {
    url::Url::parse(def.url.expose())
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "postgres".to_string())
}

/// The TCP port in the cluster's URL (default 5432).
pub fn port(def: &PgClusterDef) -> Result<u16, StepError> {
    let url = url::Url::parse(def.url.expose()).map_err(|_| {
        StepError::fatal(format!(
            "the URL of cluster {} is not a valid URL",
            def.display()
        ))
    })?;
    Ok(url.port().unwrap_or(5432))
}

/// `text` with the cluster's password (raw and percent-decoded) replaced by `[redacted]`.
pub fn scrub(def: &PgClusterDef, text: &str) -> String {
    let mut out = text.replace(def.url.expose(), &def.display());
    if let Ok(url) = url::Url::parse(def.url.expose())
        && let Some(raw) = url.password()
        && !raw.is_empty()
    {
        out = out.replace(raw, "[redacted]");
        let decoded = decode(raw);
        if !decoded.is_empty() {
            out = out.replace(&decoded, "[redacted]");
        }
    }
    out
}

/// A conninfo value with `\` and `'` escaped (to go between single quotes).
fn quote_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "\\'")
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::test_def as def;

    #[test]
    fn conninfo_leaves_the_password_out() {
        let d = def("postgres://rep%40l:s3cr%2Bt@dr-db:5433/app?sslmode=require&password=x");
        let ci = conninfo(&d).unwrap();
        assert_eq!(
            ci,
            "host='dr-db' port='5433' user='rep@l' dbname='app' sslmode='require'"
        );
        assert_eq!(password(&d).as_deref(), Some("s3cr+t"));
        assert!(!ci.contains("s3cr"));
        assert_eq!(
            conninfo(&def("postgres://u@h/d?host=/run/pg")).unwrap(),
            "user='u' dbname='d' host='/run/pg'"
        );
        assert!(conninfo(&def("mysql://u@h/d")).is_err());
        assert_eq!(password(&def("postgres://u@h/d")), None);
        assert_eq!(
            db_conninfo(&d, "o'k").unwrap(),
            "host='dr-db' port='5433' user='rep@l' dbname='app' sslmode='require' dbname='o\\'k'"
        );
    }

    #[test]
    fn urls_without_the_password() {
        let d = def("postgres://u:p%40ss@h:6543/app?sslmode=disable&password=x");
        assert_eq!(
            db_url_without_password(&d, "scratch").unwrap(),
            "postgres://u@h:6543/scratch?sslmode=disable"
        );
        assert_eq!(url_database(&d), "app");
        assert_eq!(url_database(&def("postgres://u@h")), "postgres");
        assert_eq!(port(&d).unwrap(), 6543);
        assert_eq!(port(&def("postgres://db/app")).unwrap(), 5432);
    }

    #[test]
    fn scrub_hides_raw_and_decoded_passwords() {
        let d = def("postgres://u:p%40ss@h:1/d");
        assert_eq!(
            scrub(&d, "auth p%40ss failed for p@ss"),
            "auth [redacted] failed for [redacted]"
        );
        assert_eq!(scrub(&d, "url postgres://u:p%40ss@h:1/d"), "url h:1/d");
    }
}
