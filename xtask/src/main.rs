//! `cargo xtask`: the CI pipeline (`ci`), tidy checks and benchmark orchestration.
//!
//! `cargo xtask ci` installs what the tests need (a Python venv with the `openai` SDK), then runs
//! fmt, tidy, clippy, cargo-deny, the test suite, the SDK test and a release build, printing each
//! phase's time.

mod bench;
mod deny;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// What the Python tests need, pinned: the OpenAI SDK (client test) and `cryptography` (the
/// independent auditor script).
const PY_REQUIREMENTS: &[(&str, &str)] = &[("openai", "3.57.0"), ("cryptography", "50.0.2")];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root()?;
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root),
        Some("tidy") => tidy::check(&root),
        Some("deny") => deny::check(&root),
        Some("venv") => venv(&root).map(|p| println!("{}", p.display())),
        Some("bench") => bench::dispatch(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask ci | tidy | deny | venv | bench gateway [--duration SECS]"
            );
            bail!("unknown or missing task")
        }
    }
}

fn root() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask has no parent dir")?
        .to_path_buf())
}

/// Runs a command, streaming its output, failing if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

struct Phases {
    started: Instant,
    done: Vec<(String, f64, bool)>,
}

impl Phases {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        eprintln!("\n==> phase: {name}");
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "==> phase {name}: {} in {secs:.1}s",
            if r.is_ok() { "ok" } else { "FAILED" }
        );
        self.done.push((name.to_string(), secs, r.is_ok()));
        r
    }

    fn summary(&self) {
        eprintln!("\n==> phase durations");
        for (name, secs, ok) in &self.done {
            eprintln!(
                "    {name:<10} {secs:>8.1}s  {}",
                if *ok { "ok" } else { "FAILED" }
            );
        }
        eprintln!(
            "    {:<10} {:>8.1}s",
            "total",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn ci(root: &Path) -> Result<()> {
    let mut p = Phases {
        started: Instant::now(),
        done: Vec::new(),
    };
    let result = (|| -> Result<()> {
        let mut python = PathBuf::new();
        p.run("prereqs", || {
            python = venv(root)?;
            Ok(())
        })?;
        p.run("fmt", || run(cargo().args(["fmt", "--all", "--check"])))?;
        p.run("tidy", || tidy::check(root))?;
        p.run("clippy", || {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        p.run("deny", || deny::check(root))?;
        let nextest = cargo()
            .args(["nextest", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        p.run("test", || {
            if nextest {
                run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))
            } else {
                run(cargo().args(["test", "--workspace", "--no-fail-fast"]))
            }
        })?;
        p.run("sdk", || {
            let mut cmd = cargo();
            if nextest {
                cmd.args([
                    "nextest",
                    "run",
                    "--workspace",
                    "--run-ignored",
                    "only",
                    "-E",
                    "test(sdk_)",
                ]);
            } else {
                cmd.args(["test", "--workspace", "sdk_", "--", "--ignored"]);
            }
            run(cmd.env("KEEL_SDK_PYTHON", &python))
        })?;
        p.run("release", || {
            run(cargo().args(["build", "--release", "--bin", "keel"]))
        })?;
        // The demo's table in docs/scenarios.md against the release build's `keel demo`.
        p.run("demo-table", || {
            let mut cmd = cargo();
            if nextest {
                cmd.args([
                    "nextest",
                    "run",
                    "--test",
                    "it",
                    "--run-ignored",
                    "only",
                    "-E",
                    "test(demo_table)",
                ]);
            } else {
                cmd.args(["test", "--test", "it", "demo_table", "--", "--ignored"]);
            }
            run(cmd.env("KEEL_DEMO_BIN", root.join("target/release/keel")))
        })?;
        Ok(())
    })();
    p.summary();
    result
}

/// Creates (once) `target/ci-venv` with the pinned `openai` SDK; returns its python.
fn venv(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/ci-venv");
    let python = dir.join("bin/python");
    let probe: Vec<String> = PY_REQUIREMENTS
        .iter()
        .map(|(name, v)| {
            format!("__import__('importlib.metadata').metadata.version('{name}') == '{v}'")
        })
        .collect();
    let probe = format!(
        "import sys; sys.exit(0 if all([{}]) else 1)",
        probe.join(", ")
    );
    let check = |py: &Path| {
        Command::new(py)
            .args(["-c", &probe])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if python.exists() && check(&python) {
        eprintln!("venv ready: {PY_REQUIREMENTS:?}");
        return Ok(python);
    }
    let host = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("no python3 on PATH")?;
    let made = Command::new(host).args(["-m", "venv"]).arg(&dir).status();
    if !matches!(made, Ok(s) if s.success()) {
        eprintln!("python venv unavailable; installing python3-venv with apt");
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get").args(["install", "-y", "python3-venv", "python3-pip"]))?;
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    }
    let pins: Vec<String> = PY_REQUIREMENTS
        .iter()
        .map(|(n, v)| format!("{n}=={v}"))
        .collect();
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&pins))?;
    if !check(&python) {
        bail!("{pins:?} did not install into {}", dir.display());
    }
    Ok(python)
}
