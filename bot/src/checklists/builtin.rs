//! The built-in checklists: the seed plan's "DR Runbook Checklist" (Pre-Failover, During
//! Failover, Post-Failover, Recovery to Primary) as data files (`bot/checklists/*.toml`),
//! embedded at build time. A `[[checklists]]` entry of the same name replaces one.

use crate::config::ChecklistDef;

/// `(file stem, TOML text)` of every built-in checklist, sorted by name.
pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_checklists.rs"));

/// Names of the built-in checklists.
pub fn names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _)| *n).collect()
}

/// Parses a built-in checklist.
pub fn get(name: &str) -> Option<Result<ChecklistDef, String>> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| toml::from_str::<ChecklistDef>(t).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_is_valid_and_named_after_its_file() {
        assert_eq!(
            names(),
            [
                "during-failover",
                "post-failover",
                "pre-failover",
                "recovery-to-primary"
            ]
        );
        for (stem, _) in FILES {
            let c = get(stem)
                .unwrap()
                .unwrap_or_else(|e| panic!("{stem}.toml: {e}"));
            assert_eq!(&c.name, stem, "{stem}.toml names itself `{}`", c.name);
            assert_eq!(super::super::problems(&c, stem), Vec::<String>::new());
        }
    }
}
