//! The built-in runbooks: the seed plan's procedures as data files (`recovery/runbooks/*.toml`),
//! embedded at build time. A config enables them by name with `builtin_runbooks = [..]`; a
//! `[[runbooks]]` entry of the same name replaces the built-in one.

use crate::runbook::RunbookDef;

/// `(file stem, TOML text)` of every built-in runbook, sorted by name.
pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_runbooks.rs"));

/// Names of the built-in runbooks.
pub fn names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _)| *n).collect()
}

/// The TOML text of a built-in runbook.
pub fn text(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Parses a built-in runbook.
pub fn get(name: &str) -> Option<Result<RunbookDef, String>> {
    text(name).map(|t| toml::from_str::<RunbookDef>(t).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_is_named_after_its_file() {
        for (stem, _) in FILES {
            let rb = get(stem)
                .unwrap()
                .unwrap_or_else(|e| panic!("{stem}.toml: {e}"));
            assert_eq!(&rb.name, stem, "{stem}.toml names itself `{}`", rb.name);
        }
    }
}
