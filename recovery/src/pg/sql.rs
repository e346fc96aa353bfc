//! SQL text drbot builds itself: quoted identifiers and table names, the table names it
//! accepts in parameters, and row counts.

use std::collections::BTreeMap;

use sqlx::PgConnection;

/// A SQL identifier in double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A (possibly schema-qualified) table name, quoted part by part: `"public"."projects"`.
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether `name` is an accepted table name: `table` or `schema.table`, each part lowercase
/// letters, digits and `_`, not starting with a digit.
pub fn valid_table(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// For `validate`: every table name is accepted by [`valid_table`].
pub fn check_tables<'a>(
    field: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), String> {
    for t in names {
        if !valid_table(t) {
            return Err(format!(
                "{field}: `{t}` is not a table name drbot accepts (`table` or `schema.table`, \
                 lowercase letters, digits and `_`)"
            ));
        }
    }
    Ok(())
}

/// Row counts of `tables` (`None` for a table that does not exist).
pub async fn count_rows(
    conn: &mut PgConnection,
    tables: &[String],
) -> Result<BTreeMap<String, Option<i64>>, sqlx::Error> {
    let mut out = BTreeMap::new();
    for t in tables {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(t)
            .fetch_one(&mut *conn)
            .await?;
        let count = match exists {
            None => None,
            Some(_) => {
                let sql = format!("SELECT count(*) FROM {}", quote_table(t));
                Some(
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .fetch_one(&mut *conn)
                        .await?,
                )
            }
        };
        out.insert(t.clone(), count);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_table_names() {
        assert_eq!(quote_table("public.projects"), "\"public\".\"projects\"");
        assert_eq!(quote_table("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert!(valid_table("public.project_events"));
        assert!(!valid_table("Projects"));
        assert!(!valid_table("a.b.c"));
        assert!(!valid_table("1st"));
        let bad = vec!["ok".to_string(), "no way".to_string()];
        assert!(
            check_tables("tables", &bad)
                .unwrap_err()
                .starts_with("tables: `no way`")
        );
    }
}
