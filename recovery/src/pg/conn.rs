//! Finding a `[postgres.<name>]` cluster and connecting to it without ever showing its password:
//! sqlx connections for queries, libpq conninfo strings (password left out) for tools.

use std::{str::FromStr, time::Duration};

use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};

use crate::{
    resources::{PgClusterDef, Resources},
    step::StepError,
};

/// How long a connection attempt may take before the cluster counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How every connection failure from [`connect`] starts, so callers can tell "unreachable"
/// from other errors.
pub const CANNOT_CONNECT: &str = "cannot connect to";

/// The cluster called `name`, or an error naming the known ones.
pub fn cluster<'a>(resources: &'a Resources, name: &str) -> Result<&'a PgClusterDef, String> {
    resources.postgres.get(name).ok_or_else(|| {
        let known: Vec<&str> = resources.postgres.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("unknown PostgreSQL cluster `{name}` (no [postgres.<name>] is configured)")
        } else {
            format!(
                "unknown PostgreSQL cluster `{name}` (known: {})",
                known.join(", ")
            )
        }
    })
}

/// For `StepKind::validate`: `name` must be a configured cluster, unless it still holds an
/// unresolved `{placeholder}` (checked again once the plan is resolved). `field` prefixes the
/// error, e.g. `replica: unknown PostgreSQL cluster …`.
pub fn check_cluster(resources: &Resources, field: &str, name: &str) -> Result<(), String> {
    if name.contains('{') {
        return Ok(());
    }
    if name.trim().is_empty() {
        return Err(format!("{field}: must name a [postgres.<name>] cluster"));
    }
    cluster(resources, name)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

/// Opens one connection (application name `drbot`, statement logging off). Failures are
/// retryable and name the cluster by `display()`, never by URL.
pub async fn connect(def: &PgClusterDef) -> Result<PgConnection, StepError> {
    let where_ = def.display();
    let opts = PgConnectOptions::from_str(def.url.expose())
        .map_err(|e| {
            StepError::fatal(format!(
                "the URL of PostgreSQL cluster {where_} is invalid: {}",
                scrub(def, &e.to_string())
            ))
        })?
        .application_name("drbot")
        .disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StepError::retryable(format!(
            "{CANNOT_CONNECT} {where_}: {}",
            scrub(def, &e.to_string())
        ))),
        Err(_) => Err(StepError::retryable(format!(
            "{CANNOT_CONNECT} {where_}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A failed query on `def` as a retryable step error (password scrubbed), prefixed by `what`.
pub fn query_error(def: &PgClusterDef, what: &str, e: sqlx::Error) -> StepError {
    StepError::retryable(format!(
        "{what} on {} failed: {}",
        def.display(),
        scrub(def, &e.to_string())
    ))
}

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
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" "))
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

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn def(url: &str) -> PgClusterDef {
        PgClusterDef {
            url: Secret::new(url),
            bin_dir: None,
            data_dir: None,
            os_user: None,
        }
    }

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

    #[test]
    fn unknown_clusters_are_named() {
        let mut r = Resources::default();
        assert!(
            check_cluster(&r, "replica", "dr")
                .unwrap_err()
                .contains("no [postgres")
        );
        r.postgres.insert("dr".into(), def("postgres://u@h/d"));
        r.postgres.insert("main".into(), def("postgres://u@h/d"));
        assert_eq!(
            check_cluster(&r, "replica", "west").unwrap_err(),
            "replica: unknown PostgreSQL cluster `west` (known: dr, main)"
        );
        assert!(check_cluster(&r, "replica", "{region}").is_ok());
        assert!(check_cluster(&r, "replica", "dr").is_ok());
        assert!(check_cluster(&r, "replica", " ").is_err());
    }
}
