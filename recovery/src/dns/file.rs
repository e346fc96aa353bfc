//! The `file` DNS provider: records in a local file, either `hosts` lines (`address name`,
//! every other line kept as it is) or a JSON object keyed by name. Writes go to a temporary
//! file that is renamed over the old one, so readers never see half a file.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use super::record::{Record, RecordData, RecordType, normalize_name, same_name};
use crate::{resources::DnsFileFormat, step::StepError};

/// A record file.
#[derive(Debug, Clone)]
pub struct FileZone {
    path: PathBuf,
    format: DnsFileFormat,
}

/// One record of a `json` record file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonEntry {
    /// `A`, `AAAA` or `CNAME`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Addresses, or the one CNAME target.
    pub values: Vec<String>,
    /// Time to live in seconds.
    #[serde(default)]
    pub ttl: i64,
}

impl FileZone {
    /// The record file at `path` in `format`.
    pub fn new(path: impl Into<PathBuf>, format: DnsFileFormat) -> Self {
        Self {
            path: path.into(),
            format,
        }
    }

    /// Whether this file can hold such a record: no alias targets or weighted records in
    /// either format, and only addresses (A/AAAA) in `hosts` files.
    pub fn supports(
        format: DnsFileFormat,
        rtype: RecordType,
        alias: bool,
        weighted: bool,
    ) -> Result<(), String> {
        if alias {
            return Err("alias: a file DNS zone cannot hold alias records (use `values`)".into());
        }
        if weighted {
            return Err("set_identifier: a file DNS zone cannot hold weighted records".into());
        }
        if format == DnsFileFormat::Hosts && rtype == RecordType::Cname {
            return Err(
                "type: a hosts-format DNS file holds only addresses (A, AAAA), not CNAME".into(),
            );
        }
        Ok(())
    }

    /// Whether the file keeps TTLs (`hosts` lines have none).
    pub fn keeps_ttl(&self) -> bool {
        self.format == DnsFileFormat::Json
    }

    /// The record `name`/`rtype`, or `None` when the file (or the record) does not exist.
    pub async fn read(&self, name: &str, rtype: RecordType) -> Result<Option<Record>, StepError> {
        let (path, format, name) = (self.path.clone(), self.format, name.to_string());
        blocking(move || {
            let text = read_text(&path)?;
            match format {
                DnsFileFormat::Hosts => Ok(hosts_read(&text, &name, rtype)),
                DnsFileFormat::Json => json_read(&text, &name, rtype)
                    .map_err(|e| StepError::fatal(format!("{}: {e}", path.display()))),
            }
        })
        .await
    }

    /// Replaces the record for `record.name` (and, in a `hosts` file, its address family),
    /// creating the file when missing.
    pub async fn upsert(&self, record: &Record) -> Result<(), StepError> {
        Self::supports(
            self.format,
            record.rtype,
            matches!(record.data, RecordData::Alias(_)),
            record.set_identifier.is_some(),
        )
        .map_err(StepError::fatal)?;
        let (path, format, record) = (self.path.clone(), self.format, record.clone());
        blocking(move || {
            let text = read_text(&path)?;
            let new = match format {
                DnsFileFormat::Hosts => hosts_write(&text, &record),
                DnsFileFormat::Json => json_write(&text, &record)
                    .map_err(|e| StepError::fatal(format!("{}: {e}", path.display())))?,
            };
            write_atomic(&path, new.as_bytes()).map_err(|e| io_error("cannot write", &path, e))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StepError::retryable(format!("file DNS task failed: {e}")))?
}

/// The file's text; empty when it does not exist.
fn read_text(path: &Path) -> Result<String, StepError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_error("cannot read", path, e)),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StepError {
    let msg = format!("{what} DNS file {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::PermissionDenied
        | std::io::ErrorKind::ReadOnlyFilesystem
        | std::io::ErrorKind::IsADirectory
        | std::io::ErrorKind::InvalidData => StepError::fatal(msg),
        _ => StepError::retryable(msg),
    }
}

/// Whether `addr` is an address of `rtype`'s family.
fn family_matches(rtype: RecordType, addr: &str) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => rtype == RecordType::A,
        Ok(IpAddr::V6(_)) => rtype == RecordType::Aaaa,
        Err(_) => false,
    }
}

/// A hosts line split into address, names and trailing comment (`None` for blank and
/// comment-only lines).
fn hosts_fields(line: &str) -> Option<(&str, Vec<&str>, Option<&str>)> {
    let (body, comment) = match line.find('#') {
        Some(i) => (&line[..i], Some(&line[i..])),
        None => (line, None),
    };
    let mut fields = body.split_whitespace();
    let addr = fields.next()?;
    let names: Vec<&str> = fields.collect();
    if names.is_empty() {
        return None;
    }
    Some((addr, names, comment))
}

/// The addresses of family `rtype` that a hosts file gives `name`.
pub fn hosts_read(text: &str, name: &str, rtype: RecordType) -> Option<Record> {
    let values: Vec<String> = text
        .lines()
        .filter_map(hosts_fields)
        .filter(|(addr, names, _)| {
            family_matches(rtype, addr) && names.iter().any(|n| same_name(n, name))
        })
        .map(|(addr, _, _)| addr.to_string())
        .collect();
    (!values.is_empty()).then(|| Record {
        name: normalize_name(name),
        rtype,
        data: RecordData::Values { values, ttl: 0 },
        set_identifier: None,
        weight: None,
    })
}

/// The hosts file with `record`'s name removed from every line of its address family (lines
/// left without names dropped) and one `address name` line per value put where the first such
/// line was (else at the end). Every other line stays as it was.
pub fn hosts_write(text: &str, record: &Record) -> String {
    let RecordData::Values { values, .. } = &record.data else {
        return text.to_string();
    };
    let name = normalize_name(&record.name);
    let mut out: Vec<String> = Vec::new();
    let mut at: Option<usize> = None;
    for line in text.lines() {
        match hosts_fields(line) {
            Some((addr, names, comment))
                if family_matches(record.rtype, addr)
                    && names.iter().any(|n| same_name(n, &name)) =>
            {
                let rest: Vec<&str> = names.into_iter().filter(|n| !same_name(n, &name)).collect();
                if !rest.is_empty() {
                    let mut kept = format!("{addr}\t{}", rest.join(" "));
                    if let Some(c) = comment {
                        kept.push(' ');
                        kept.push_str(c);
                    }
                    out.push(kept);
                }
                at.get_or_insert(out.len());
            }
            _ => out.push(line.to_string()),
        }
    }
    let new: Vec<String> = values
        .iter()
        .map(|v| format!("{}\t{name}", v.trim()))
        .collect();
    let at = at.unwrap_or(out.len());
    out.splice(at..at, new);
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn json_records(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object of records keyed by name".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// The record `name` of a JSON record file, when it has type `rtype`.
pub fn json_read(text: &str, name: &str, rtype: RecordType) -> Result<Option<Record>, String> {
    let records = json_records(text)?;
    let Some((key, value)) = records.iter().find(|(k, _)| same_name(k, name)) else {
        return Ok(None);
    };
    let entry: JsonEntry = serde_json::from_value(value.clone())
        .map_err(|e| format!("record `{key}`: {e} (expected {{type, values, ttl}})"))?;
    let found = RecordType::parse(&format!("record `{key}`: type"), &entry.rtype)?;
    if found != rtype {
        return Ok(None);
    }
    Ok(Some(Record {
        name: normalize_name(key),
        rtype,
        data: RecordData::Values {
            values: entry.values,
            ttl: entry.ttl,
        },
        set_identifier: None,
        weight: None,
    }))
}

/// The JSON record file with the entry for `record.name` replaced (other entries kept),
/// pretty-printed.
pub fn json_write(text: &str, record: &Record) -> Result<String, String> {
    let RecordData::Values { values, ttl } = &record.data else {
        return Err("a file DNS zone cannot hold alias records".into());
    };
    let mut records = json_records(text)?;
    records.retain(|k, _| !same_name(k, &record.name));
    let entry = JsonEntry {
        rtype: record.rtype.to_string(),
        values: values.iter().map(|v| v.trim().to_string()).collect(),
        ttl: *ttl,
    };
    records.insert(
        normalize_name(&record.name),
        serde_json::to_value(entry).map_err(|e| e.to_string())?,
    );
    let mut s = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
    s.push('\n');
    Ok(s)
}

/// Writes `bytes` to a temporary file next to `path` (same permissions as the old file),
/// syncs it, renames it over `path` and syncs the directory. Creates the directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{file_name}.drbot-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, values: &[&str]) -> Record {
        Record {
            name: name.into(),
            rtype: RecordType::A,
            data: RecordData::Values {
                values: values.iter().map(|v| v.to_string()).collect(),
                ttl: 60,
            },
            set_identifier: None,
            weight: None,
        }
    }

    #[test]
    fn hosts_lines_of_other_names_and_families_stay() {
        let text = "# header\n127.0.0.1\tlocalhost\n10.0.1.10 api.example.com api # old\n\
                    ::1 localhost api.example.com\n10.0.1.11 api.example.com\n";
        let got = hosts_read(text, "API.example.com.", RecordType::A).unwrap();
        assert_eq!(
            got.data,
            RecordData::Values {
                values: vec!["10.0.1.10".into(), "10.0.1.11".into()],
                ttl: 0
            }
        );
        let out = hosts_write(text, &a("api.example.com", &["10.0.2.10"]));
        assert_eq!(
            out,
            "# header\n127.0.0.1\tlocalhost\n10.0.1.10\tapi # old\n10.0.2.10\tapi.example.com\n\
             ::1 localhost api.example.com\n"
        );
        assert_eq!(
            hosts_read(&out, "api.example.com", RecordType::Aaaa)
                .unwrap()
                .data,
            RecordData::Values {
                values: vec!["::1".into()],
                ttl: 0
            }
        );
        assert_eq!(
            hosts_write("", &a("db.example.com", &["10.0.0.5", "10.0.0.6"])),
            "10.0.0.5\tdb.example.com\n10.0.0.6\tdb.example.com\n"
        );
    }

    #[test]
    fn json_entries_are_replaced_by_name() {
        let text =
            r#"{"other.example.com": {"type": "CNAME", "values": ["x.example.com"], "ttl": 300}}"#;
        let out = json_write(text, &a("api.example.com", &["10.0.2.10"])).unwrap();
        let read = json_read(&out, "api.example.com", RecordType::A)
            .unwrap()
            .unwrap();
        assert!(read.same_as(&a("api.example.com", &["10.0.2.10"])));
        assert!(
            json_read(&out, "other.example.com", RecordType::Cname)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            json_read(&out, "api.example.com", RecordType::Cname).unwrap(),
            None
        );
        assert_eq!(
            json_read("[1]", "x", RecordType::A).unwrap_err(),
            "not a JSON object of records keyed by name"
        );
        assert!(
            json_read(r#"{"x": {"type": "A"}}"#, "x", RecordType::A)
                .unwrap_err()
                .starts_with("record `x`: missing field `values`")
        );
    }
}
