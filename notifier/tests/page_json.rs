//! `/status.json` against its JSON Schema (`notifier/templates/page/status.schema.json`), with a
//! small validator for exactly the keywords the schema uses (it refuses any other keyword, so
//! the schema cannot silently grow rules that are not checked).

mod page_support;

use chrono::DateTime;
use notifier::page::{SCHEMA, SCHEMA_VERSION, render_json, sample_model};
use page_support::{HOSTILE, empty_model, hostile_model, now, odd_model};
use serde_json::{Value, json};

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 4] = ["$schema", "$id", "title", "description"];

struct Validator<'a> {
    root: &'a Value,
}

impl Validator<'_> {
    /// Every violation, as `path: message`.
    fn errors(&self, schema: &Value, doc: &Value, path: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let Some(schema) = schema.as_object() else {
            return vec![format!("{path}: schema is not an object")];
        };
        for (key, rule) in schema {
            match key.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "$defs" => {}
                "$ref" => {
                    let name = rule.as_str().and_then(|r| r.strip_prefix("#/$defs/"));
                    match name.and_then(|n| self.root["$defs"].get(n)) {
                        Some(target) => errs.extend(self.errors(target, doc, path)),
                        None => errs.push(format!("{path}: unresolvable $ref {rule}")),
                    }
                }
                "type" => {
                    let ok = match rule.as_str() {
                        Some("object") => doc.is_object(),
                        Some("array") => doc.is_array(),
                        Some("string") => doc.is_string(),
                        Some("number") => doc.is_number(),
                        Some("integer") => doc.is_u64() || doc.is_i64(),
                        Some("boolean") => doc.is_boolean(),
                        Some("null") => doc.is_null(),
                        _ => {
                            errs.push(format!("{path}: unsupported type {rule}"));
                            true
                        }
                    };
                    if !ok {
                        errs.push(format!("{path}: expected {rule}, got {doc}"));
                    }
                }
                "const" if doc != rule => errs.push(format!("{path}: expected {rule}, got {doc}")),
                "const" => {}
                "enum" => {
                    if !rule.as_array().is_some_and(|v| v.contains(doc)) {
                        errs.push(format!("{path}: {doc} not in {rule}"));
                    }
                }
                "minimum" => {
                    if let (Some(min), Some(n)) = (rule.as_f64(), doc.as_f64())
                        && n < min
                    {
                        errs.push(format!("{path}: {n} < {min}"));
                    }
                }
                "format" => {
                    assert_eq!(rule, "date-time", "unsupported format");
                    if let Some(s) = doc.as_str()
                        && DateTime::parse_from_rfc3339(s).is_err()
                    {
                        errs.push(format!("{path}: {s:?} is not an RFC 3339 date-time"));
                    }
                }
                "required" => {
                    for k in rule.as_array().unwrap() {
                        if let Some(o) = doc.as_object()
                            && !o.contains_key(k.as_str().unwrap())
                        {
                            errs.push(format!("{path}: missing {k}"));
                        }
                    }
                }
                "properties" => {
                    if let Some(o) = doc.as_object() {
                        for (k, sub) in rule.as_object().unwrap() {
                            if let Some(v) = o.get(k) {
                                errs.extend(self.errors(sub, v, &format!("{path}.{k}")));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    assert_eq!(rule, &json!(false), "only additionalProperties: false");
                    let known = schema.get("properties").and_then(Value::as_object);
                    if let Some(o) = doc.as_object() {
                        for k in o.keys() {
                            if !known.is_some_and(|p| p.contains_key(k)) {
                                errs.push(format!("{path}: unexpected key {k:?}"));
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(a) = doc.as_array() {
                        for (i, v) in a.iter().enumerate() {
                            errs.extend(self.errors(rule, v, &format!("{path}[{i}]")));
                        }
                    }
                }
                "anyOf" => {
                    let branches = rule.as_array().unwrap();
                    if !branches
                        .iter()
                        .any(|b| self.errors(b, doc, path).is_empty())
                    {
                        errs.push(format!("{path}: {doc} matches none of anyOf"));
                    }
                }
                other => errs.push(format!("{path}: unsupported keyword {other:?}")),
            }
        }
        errs
    }
}

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the schema file is JSON")
}

fn validate(doc: &Value) -> Vec<String> {
    let schema = schema();
    Validator { root: &schema }.errors(&schema, doc, "$")
}

#[test]
fn every_model_validates() {
    for (name, m) in [
        ("sample", sample_model(now())),
        ("hostile", hostile_model()),
        ("empty", empty_model()),
        ("odd", odd_model()),
    ] {
        let doc = render_json(&m);
        let errs = validate(&doc);
        assert!(errs.is_empty(), "{name}: {errs:#?}\n{doc:#}");
    }
}

#[test]
fn sample_document_has_the_documented_values() {
    let doc = render_json(&sample_model(now()));
    assert_eq!(doc["schema_version"], SCHEMA_VERSION);
    assert_eq!(doc["generated_at"], "2026-11-26T14:05:00Z");
    assert_eq!(doc["overall_status"], "partial_outage");
    assert_eq!(
        doc["components"][0],
        json!({"name": "API", "status": "partial_outage", "description": "Public REST API"})
    );
    let cur = &doc["current"];
    assert_eq!(cur["id"], "42");
    assert_eq!(cur["status"], "identified");
    assert_eq!(cur["impact"], "major");
    assert_eq!(cur["resolved_at"], Value::Null);
    assert_eq!(cur["updates"][0]["status"], "investigating", "oldest first");
    assert_eq!(cur["updates"][1]["at"], "2026-11-26T13:53:00Z");
    assert_eq!(doc["history"][0]["resolved_at"], "2026-11-19T14:52:00Z");
    let ev = &doc["evidence"];
    assert_eq!(ev["last_backup_verification"]["duration_seconds"], 312.0);
    assert_eq!(ev["last_backup_verification"]["tables"], 87);
    assert_eq!(ev["last_drill"]["rto_seconds"], 580.0);
    assert_eq!(ev["last_drill"]["rpo_target_seconds"], 60.0);
    assert_eq!(ev["last_drill"]["met"], true);
    assert_eq!(
        ev["schedules"],
        json!([
            { "name": "weekly-verify", "runbook": "verify-backup", "last_result": "passed",
              "last_at": "2026-11-26T08:05:00Z", "next_due": "2026-12-03T08:05:00Z",
              "overdue": false },
            { "name": "monthly-failover-test", "runbook": "failover", "last_result": "failed",
              "last_at": "2026-10-17T14:05:00Z", "next_due": "2026-12-17T14:05:00Z",
              "overdue": true },
            { "name": "quarterly-drill", "runbook": "drill", "last_result": "none",
              "last_at": null, "next_due": "2026-12-16T14:05:00Z", "overdue": false },
        ])
    );
    let empty = render_json(&empty_model());
    assert_eq!(empty["current"], Value::Null);
    assert_eq!(
        empty["evidence"],
        json!({"last_backup_verification": null, "last_drill": null, "schedules": []})
    );
}

#[test]
fn user_text_round_trips_verbatim() {
    let doc = render_json(&hostile_model());
    let text = serde_json::to_string(&doc).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["current"]["name"], format!("Incident {HOSTILE}"));
    assert!(
        !text.contains('\u{1b}'),
        "control characters are escaped in JSON text"
    );
}

#[test]
fn validator_catches_violations() {
    let good = render_json(&sample_model(now()));
    type Breaker = (&'static str, fn(&mut Value));
    let broken: [Breaker; 11] = [
        ("missing key", |d| {
            d.as_object_mut().unwrap().remove("evidence");
        }),
        ("extra key", |d| d["components"][0]["colour"] = json!("red")),
        ("bad enum", |d| {
            d["components"][1]["status"] = json!("on_fire")
        }),
        ("bad nested enum", |d| {
            d["current"]["updates"][0]["status"] = json!("done")
        }),
        ("bad date", |d| {
            d["current"]["started_at"] = json!("yesterday")
        }),
        ("wrong type", |d| {
            d["evidence"]["last_drill"]["met"] = json!("yes")
        }),
        ("negative", |d| {
            d["evidence"]["last_backup_verification"]["duration_seconds"] = json!(-1)
        }),
        ("bad version", |d| d["schema_version"] = json!(2)),
        ("bad schedule result", |d| {
            d["evidence"]["schedules"][0]["last_result"] = json!("ok")
        }),
        ("schedule without overdue", |d| {
            d["evidence"]["schedules"][1]
                .as_object_mut()
                .unwrap()
                .remove("overdue");
        }),
        ("null history", |d| d["history"] = Value::Null),
    ];
    for (what, break_it) in broken {
        let mut doc = good.clone();
        break_it(&mut doc);
        assert!(!validate(&doc).is_empty(), "{what} was not caught");
    }
}
