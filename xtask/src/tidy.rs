//! Tidy checks: every module opens with a `//!` line; every crate is in ARCHITECTURE.md and
//! opts into the workspace lints; every event kind in `keel_core::EventKind` has a row in
//! ARCHITECTURE.md's event catalogue.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n != "target" && n != "fixtures")
            {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Runs every tidy check, listing all problems before failing.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["src", "crates", "xtask/src", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with("#!"));
        if !first.is_some_and(|l| l.starts_with("//!")) {
            problems.push(format!(
                "{}: does not open with a `//!` line saying what it is for",
                f.display()
            ));
        }
    }
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !arch.contains(&format!("`{name}`")) {
                problems.push(format!("crates/{name} is not described in ARCHITECTURE.md"));
            }
            let manifest = std::fs::read_to_string(e.path().join("Cargo.toml")).unwrap_or_default();
            if !manifest.contains("[lints]") || !manifest.contains("workspace = true") {
                problems.push(format!(
                    "crates/{name}/Cargo.toml lacks `[lints] workspace = true`"
                ));
            }
        }
    }
    let catalogue =
        std::fs::read_to_string(root.join("crates/keel-core/src/event.rs")).unwrap_or_default();
    let kinds = event_kinds(&catalogue);
    if kinds.is_empty() {
        problems.push("crates/keel-core/src/event.rs: no event kinds found in EventKind".into());
    }
    for kind in kinds {
        if !arch.contains(&format!("| `{kind}` |")) {
            problems.push(format!(
                "event kind `{kind}` is not in ARCHITECTURE.md's event catalogue table"
            ));
        }
    }
    if problems.is_empty() {
        eprintln!("tidy: {} files checked, all fine", files.len());
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        bail!("{} tidy problems", problems.len())
    }
}

/// The kinds declared in `impl EventKind` (`pub const NAME: &'static str = "Kind";`).
fn event_kinds(source: &str) -> Vec<String> {
    let Some(start) = source.find("impl EventKind {") else {
        return Vec::new();
    };
    source[start..]
        .lines()
        .take_while(|l| !l.starts_with('}'))
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains("&'static str ="))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::event_kinds;

    fn check(source: &str, expected: &[&str]) {
        assert_eq!(event_kinds(source), expected, "{source}");
    }

    #[test]
    fn event_kinds_are_read_from_the_catalogue_impl() {
        check(
            "pub struct EventKind;\nimpl EventKind {\n    pub const A: &'static str = \"Alpha\";\n    pub const ALL: [&'static str; 1] = [Self::A];\n}\nconst X: &'static str = \"Other\";\n",
            &["Alpha"],
        );
        check("no catalogue here", &[]);
    }
}
