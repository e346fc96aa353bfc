//! `${NAME}` references to environment variables. In the config they are replaced when the
//! file is loaded, except in runbook step parameters: there they stay as written in plans (so a
//! secret given through the environment, e.g. a health check's `Authorization` header, is never
//! stored, shown, audited or fingerprinted) and are read from the environment when a plan is
//! checked and when a step is built. `$${` is a literal `${`.

use serde_json::Value;

/// Looks variables up in this process's environment.
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `s` with every `${NAME}` replaced by `env(NAME)`, and `$${` by `${`. Errors name the
/// variable (never a value).
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t
                .find('}')
                .ok_or("unclosed `${` (write `$${` for a literal)")?;
            let name = &t[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand`] in every string of `v` (keys are kept as written).
pub fn expand_value(v: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if s.contains('$') => Value::String(expand(s, env)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| expand_value(x, env))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), expand_value(x, env)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expands_env() {
        let env = |k: &str| (k == "TOKEN").then(|| "xoxb-1".to_string());
        assert_eq!(expand("a ${TOKEN} b", &env).unwrap(), "a xoxb-1 b");
        assert_eq!(expand("$${TOKEN} $5", &env).unwrap(), "${TOKEN} $5");
        assert!(
            expand("${MISSING}", &env)
                .unwrap_err()
                .contains("MISSING is not set")
        );
        assert!(expand("${TOKEN", &env).unwrap_err().contains("unclosed"));
        let v =
            json!({"headers": {"Authorization": "Bearer ${TOKEN}"}, "count": 2, "l": ["${TOKEN}"]});
        assert_eq!(
            expand_value(&v, &env).unwrap(),
            json!({"headers": {"Authorization": "Bearer xoxb-1"}, "count": 2, "l": ["xoxb-1"]})
        );
    }

    proptest::proptest! {
        /// Any text: no panic, and a value never appears in an error.
        #[test]
        fn any_text(s in "\\PC{0,64}") {
            let env = |_: &str| Some("sekret".to_string());
            if let Err(e) = expand(&s, &env) {
                proptest::prop_assert!(!e.contains("sekret"));
            }
        }
    }
}
