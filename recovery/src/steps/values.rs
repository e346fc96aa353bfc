//! Checks shared by the step types' `validate`: whether a parameter still holds an unresolved
//! `{placeholder}`, and `"15m"`-style durations.

use std::time::Duration;

/// Whether a parameter still holds an unresolved `{placeholder}` (accepted by `validate`,
/// checked again once the plan is resolved).
pub fn is_placeholder(value: &str) -> bool {
    value.contains('{')
}

/// Parses a `"15m"`-style duration parameter; the error names `key` and the value.
pub fn duration(key: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| format!("{key}: `{value}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_durations() {
        assert!(is_placeholder("{region}"));
        assert!(!is_placeholder("dr"));
        assert_eq!(
            duration("max_age", " 15m ").unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            duration("max_age", "soon").unwrap_err(),
            "max_age: `soon`: expected number at 0"
        );
    }
}
