//! A replica count given as a step parameter: a number (`replicas = 5`) or a string, so that a
//! command argument can fill it (`replicas = "{replicas}"`).

use std::fmt;

use serde::{Deserialize, Deserializer, de};

use crate::steps::values::is_placeholder;

/// A count of replicas: a whole number ≥ 0, or a string holding one (or a placeholder before
/// the plan is resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// `5`.
    Number(u32),
    /// `"5"` or `"{replicas}"`.
    Text(String),
}

impl Count {
    /// The number; `None` while the string still holds an unresolved `{placeholder}`. The
    /// error names `field`.
    pub fn value(&self, field: &str) -> Result<Option<u32>, String> {
        match self {
            Count::Number(n) => Ok(Some(*n)),
            Count::Text(s) if is_placeholder(s) => Ok(None),
            Count::Text(s) => s.trim().parse::<u32>().map(Some).map_err(|_| {
                format!("{field}: `{s}` is not a replica count (a whole number, 0 or more)")
            }),
        }
    }
    /// The number once the plan is resolved; a leftover placeholder is an error.
    pub fn resolved(&self, field: &str) -> Result<u32, String> {
        self.value(field)?
            .ok_or_else(|| format!("{field}: `{self}` was not resolved to a number"))
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Number(n) => write!(f, "{n}"),
            Count::Text(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a replica count (a whole number, 0 or more, or a string holding one)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count::Number)
                    .map_err(|_| E::custom(format!("{v} replicas is too many")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "{v} is not a replica count (a whole number, 0 or more)"
                    )));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                Err(E::custom(format!(
                    "{v} is not a replica count (a whole number, 0 or more)"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                Ok(Count::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Count, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_strings_and_placeholders() {
        assert_eq!(parse(5.into()).unwrap().value("r").unwrap(), Some(5));
        assert_eq!(parse(" 7 ".into()).unwrap().value("r").unwrap(), Some(7));
        assert_eq!(parse("{n}".into()).unwrap().value("r").unwrap(), None);
        assert_eq!(
            parse("{n}".into()).unwrap().resolved("r").unwrap_err(),
            "r: `{n}` was not resolved to a number"
        );
        assert_eq!(
            parse("five".into()).unwrap().value("r").unwrap_err(),
            "r: `five` is not a replica count (a whole number, 0 or more)"
        );
        assert_eq!(
            parse((-1).into()).unwrap_err(),
            "-1 is not a replica count (a whole number, 0 or more)"
        );
        assert!(
            parse(2.5.into())
                .unwrap_err()
                .contains("2.5 is not a replica count")
        );
        assert!(
            parse(true.into())
                .unwrap_err()
                .contains("expected a replica count")
        );
    }
}
