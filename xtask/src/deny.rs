//! The `deny` phase of `cargo xtask ci`: `cargo-deny` over the lock file with the committed
//! `deny.toml`. Licences, bans and sources are always checked; advisories only when the RustSec
//! database can be fetched (it is a GitHub repository; CI may reach package registries only).
//!
//! The tool is built once from crates.io (`cargo install --locked`, pinned) into
//! `target/tools` and reused while its version matches. The PyPI wheel is not used: its latest
//! release (0.14.2) panics on current `cargo metadata` output.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::{cargo, run};

/// The cargo-deny release the CI builds.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// `target/tools/bin/cargo-deny`, installed if missing or of another version.
fn tool(root: &Path) -> Result<PathBuf> {
    let prefix = root.join("target/tools");
    let bin = prefix.join("bin/cargo-deny");
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if version.as_deref() == Some(&format!("cargo-deny {CARGO_DENY_VERSION}")) {
        eprintln!("cargo-deny {CARGO_DENY_VERSION} ready");
        return Ok(bin);
    }
    run(cargo()
        .args(["install", "--locked", "cargo-deny", "--version"])
        .arg(CARGO_DENY_VERSION)
        .arg("--root")
        .arg(&prefix))?;
    Ok(bin)
}

/// Runs the checks; an unreachable advisory database is reported and skipped.
pub(crate) fn check(root: &Path) -> Result<()> {
    let bin = tool(root)?;
    let deny = || {
        let mut cmd = Command::new(&bin);
        cmd.arg("deny")
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"));
        cmd
    };
    run(deny().args([
        "check",
        "--hide-inclusion-graph",
        "licenses",
        "bans",
        "sources",
    ]))?;
    let fetched = deny()
        .args(["fetch", "db"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if fetched {
        run(deny().args([
            "check",
            "--hide-inclusion-graph",
            "--disable-fetch",
            "advisories",
        ]))
    } else {
        eprintln!("advisory database unreachable: advisories not checked in this run");
        Ok(())
    }
}
