//! Embeds the built-in checklists (`checklists/*.toml`) into the binary and library, and
//! links the `drbot` binary with packed relative relocations.

use std::{env, fs, path::PathBuf};

fn main() {
    // DT_RELR (glibc 2.36+, GNU ld 2.38+ or lld): the position-independent binary's 74,000
    // relative relocations take a few kilobytes instead of 1.8 MB, which the loader would
    // otherwise read, and keep resident, at every start.
    let target = |v: &str| env::var(v).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("checklists");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("&[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let stem = f.file_stem().unwrap().to_string_lossy();
        out.push_str(&format!(
            "    ({stem:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
    }
    out.push_str("]\n");
    let dest = PathBuf::from(env::var("OUT_DIR").unwrap()).join("builtin_checklists.rs");
    fs::write(dest, out).unwrap();
}
