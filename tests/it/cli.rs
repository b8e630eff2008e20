//! The `keel` binary: keys, config errors, and CLI appends against a running server.

use std::process::Output;

use serde_json::json;

use crate::support::*;

fn run(args: &[&str], config: &std::path::Path) -> Output {
    keel_bin()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run keel")
}

fn stdout_last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn keys_create_list_revoke_and_a_running_server_obeys() {
    let p = Pair::start(Script::new()).await;
    let cfg = p.gw.config_path.clone();
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            run(
                &[
                    "keys", "create", "--tenant", "acme", "--role", "app", "--name", "Ann",
                ],
                &cfg,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout_last_line(&out);
    assert!(
        token.starts_with("keel_") && token.len() == 69,
        "token line: {token}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "stdout holds only the key"
    );

    let ok = client()
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "m", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.status(),
        200,
        "a key created by the CLI works on the running server"
    );

    let list = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || run(&["keys", "list"], &cfg)
    })
    .await
    .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(listing.contains("Ann"), "{listing}");
    assert!(!listing.contains(&token), "list never shows tokens");
    let key_id = listing
        .lines()
        .find(|l| l.contains("Ann"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();

    let rev = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        let key_id = key_id.clone();
        move || run(&["keys", "revoke", &key_id], &cfg)
    })
    .await
    .unwrap();
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    // The running server refuses the revoked key once its key refresh (every 250 ms) has run:
    // polled against a generous deadline, no elapsed time asserted.
    let mut refused = false;
    for _ in 0..600 {
        let r = client()
            .post(p.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": "m", "messages": user("hi")}))
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "the revoked key was never refused");
    // Refused on every later request too (the cache never brings it back).
    for _ in 0..3 {
        let r = client()
            .post(p.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": "m", "messages": user("hi")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    let again = tokio::task::spawn_blocking(move || run(&["keys", "revoke", &key_id], &cfg))
        .await
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn bad_key_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", dir.path().display())).unwrap();
    for (args, needle) in [
        (
            vec!["keys", "create", "--tenant", "acme", "--role", "root"],
            "unknown role",
        ),
        (
            vec!["keys", "create", "--tenant", "a b", "--role", "app"],
            "invalid tenant",
        ),
        (
            vec!["keys", "create", "--tenant", "*", "--role", "app"],
            "one tenant",
        ),
        (vec!["keys", "revoke", "key_nope"], "no key"),
    ] {
        let out = run(&args, &cfg);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn unknown_config_keys_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[storage]\nurll = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let out = run(&["keys", "list"], &cfg);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("urll"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");

    let missing = run(&["keys", "list"], &dir.path().join("nope.toml"));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

#[test]
fn keel_key_exported_does_not_break_config_loading() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", dir.path().display())).unwrap();
    let out = keel_bin()
        .args(["keys", "list"])
        .env("KEEL_CONFIG", &cfg)
        .env("KEEL_KEY", "kl_not_a_config_key")
        .env("KEEL_API_KEY", "kl_not_a_config_key")
        .env("KEEL_SERVER", "http://127.0.0.1:1")
        .env("KEEL_UNRELATED_SCRIPT_VAR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `KEEL_*` variable a CLI flag reads is reserved, so it can never be taken for a config key.
#[test]
fn cli_environment_variables_never_collide_with_config_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for part in text.split("env = \"").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            if name.starts_with("KEEL_") {
                seen.push(name);
            }
        }
    }
    assert!(seen.iter().any(|n| n == "KEEL_KEY"), "{seen:?}");
    for name in seen {
        assert!(
            keel_gateway::config::RESERVED_ENV.contains(&name.as_str()),
            "{name} is read by the CLI but not in RESERVED_ENV"
        );
        assert!(!keel_gateway::config::is_config_env(&name), "{name}");
    }
}

#[test]
fn env_overrides_nested_keys_but_not_keel_config_or_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", dir.path().display())).unwrap();
    let out = keel_bin()
        .args(["keys", "list"])
        .env("KEEL_CONFIG", &cfg)
        .env("KEEL_LOG", "debug")
        .env("KEEL_STORAGE__DURABILITY", "sometimes")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an env override is applied and validated"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sometimes"), "{err}");

    let db = dir.path().join("sub/other.db");
    let out = keel_bin()
        .args(["keys", "list"])
        .env("KEEL_CONFIG", &cfg)
        .env("KEEL_LOG", "warn")
        .env("KEEL_STORAGE__URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        db.exists(),
        "the overridden database (and its directory) was created"
    );
}

#[test]
fn the_readme_minimal_config_parses() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("README has a toml block") + 8;
    let end = start + readme[start..].find("```").unwrap();
    let cfg = keel_gateway::Config::from_toml_str(&readme[start..end]).unwrap();
    assert_eq!(cfg.upstreams.len(), 1);
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn drift_replay_prints_detection_indices_only() {
    let dir = tempfile::tempdir().unwrap();
    // A clean step: 200 zeros then 200 ones.
    let values: Vec<f64> = (0..400).map(|i| if i < 200 { 0.0 } else { 1.0 }).collect();
    let csv = dir.path().join("s.csv");
    std::fs::write(
        &csv,
        values.iter().map(|v| format!("{v}\n")).collect::<String>(),
    )
    .unwrap();
    let bin = dir.path().join("s.f64");
    std::fs::write(
        &bin,
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let run = |args: &[&str]| {
        keel_bin()
            .args(["drift", "replay"])
            .args(args)
            .output()
            .unwrap()
    };
    let a = run(&[
        "--detector",
        "adwin",
        "--format",
        "csv",
        csv.to_str().unwrap(),
    ]);
    let b = run(&["--detector", "adwin", bin.to_str().unwrap()]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "csv and f64 give the same detections");
    let out = String::from_utf8_lossy(&a.stdout);
    let idx: Vec<u64> = out
        .lines()
        .map(|l| l.parse().expect("only indices on stdout"))
        .collect();
    assert!(!idx.is_empty() && idx[0] >= 200 && idx[0] < 300, "{idx:?}");
    assert!(String::from_utf8_lossy(&a.stderr).contains("updates/s"));

    for (args, needle) in [
        (
            vec!["--detector", "nope", csv.to_str().unwrap()],
            "unknown detector",
        ),
        (
            vec!["--detector", "adwin:delta=2", csv.to_str().unwrap()],
            "delta",
        ),
        (
            vec![
                "--detector",
                "adwin",
                "--format",
                "xml",
                csv.to_str().unwrap(),
            ],
            "xml",
        ),
        (
            vec!["--detector", "adwin", "/no/such/file"],
            "/no/such/file",
        ),
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(o.stdout.is_empty());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let nan = dir.path().join("nan.csv");
    std::fs::write(&nan, "1\nNaN\n").unwrap();
    let o = run(&[
        "--detector",
        "adwin",
        "--format",
        "csv",
        nan.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "NaN input is rejected");
}

#[test]
fn the_example_config_is_the_readme_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/keel.example.toml")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    // The README's block under "## Minimal config", line for line.
    let section = readme
        .split_once("## Minimal config")
        .expect("README has a Minimal config section")
        .1;
    let block = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a toml block in the Minimal config section")
        .0;
    // The example file is the block plus its leading comment lines (how to start it).
    let body: String = example
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body, block,
        "keel.example.toml and README's minimal config differ"
    );
    let cfg = keel_gateway::Config::from_toml_str(&example).unwrap();
    assert_eq!(cfg.upstreams[0].base_url, "http://127.0.0.1:11434/v1");
}

/// Issue 25, defect 7: `propose` required `--reason` while the README and `--help` showed it
/// optional; `review label` required `--verdict` while the README showed it optional. The
/// README's synopsis and the CLI now agree (reasons stay required for direct suggestions).
#[test]
fn propose_reason_and_label_verdict_docs_disagree_with_cli() {
    let readme = include_str!("../../README.md");
    let cfg = std::path::Path::new("unused.toml");
    let check = |args: &[&str], readme_line: &str, needle: &str| {
        assert!(readme.contains(readme_line), "README shows: {readme_line}");
        let out = run(args, cfg);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    check(
        &["policy", "propose", "--suggestion", "{}"],
        "--suggestion JSON --reason \"why\")",
        "--reason",
    );
    check(
        &["review", "label", "rv_1", "--key", "k"],
        "--verdict ok|violation|wrong_answer|outdated [",
        "--verdict",
    );
    let help = keel_bin()
        .args(["policy", "propose", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Required with --suggestion"), "{help}");
}

/// Issue 25, defect 9: logs written to a file or pipe carried ANSI colour codes, and one-shot
/// verbs printed informational logs on the terminal unasked.
#[test]
fn logs_to_a_pipe_have_ansi_colour() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstreams]]\nname = \"u\"\nbase_url = \"http://127.0.0.1:9\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out_file = dir.path().join("sft.jsonl");
    let export = |log: Option<&str>| {
        let mut c = keel_bin();
        c.args(["export", "sft", "--out"])
            .arg(&out_file)
            .arg("--config")
            .arg(&cfg);
        match log {
            Some(l) => c.env("KEEL_LOG", l),
            None => c.env_remove("KEEL_LOG"),
        };
        c.output().unwrap()
    };
    let quiet = export(None);
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let err = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        !err.contains("INFO"),
        "informational logs only when asked: {err}"
    );
    let asked = export(Some("debug"));
    assert!(asked.status.success());
    let err = String::from_utf8_lossy(&asked.stderr);
    assert!(
        err.contains("DEBUG") || err.contains("INFO"),
        "asked for: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI escapes in a pipe: {err:?}"
    );
}

/// Issue 25, item 10: interactions were listed only by the API; `keel interactions list|show`.
#[tokio::test]
async fn interactions_list_and_show_from_the_cli() {
    let p = Pair::start(Script::new()).await;
    let r = p
        .chat(json!({"model": "m", "messages": user("hello from the cli test")}))
        .await;
    let id = r.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let cfg = p.gw.config_path.clone();
    let (list, show) = tokio::task::spawn_blocking({
        let id = id.clone();
        move || {
            (
                run(&["interactions", "list", "--limit", "5"], &cfg),
                run(&["interactions", "show", &id], &cfg),
            )
        }
    })
    .await
    .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("hello from the cli test")),
        "{list}"
    );
    assert!(show.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["record"]["id"], id.as_str());
    // The README's first steps name them, with PATH, facts and the roles that read interactions.
    let readme = include_str!("../../README.md");
    for needle in [
        "cargo install --path .",
        "keel interactions list",
        "keel facts set jp.consumption_tax",
        "`facts-correct`",
        "read by **reviewer, admin and auditor**",
    ] {
        assert!(readme.contains(needle), "README lacks {needle}");
    }
}

#[test]
fn config_check_prints_the_effective_config_masked_and_names_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("keel.toml");
    std::fs::write(
        &good,
        format!(
            "data_dir = \"{}\"\n[storage]\nurl = \"postgres://keel:hunter2@db/keel\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = keel_bin()
        .args(["config", "check"])
        .arg(&good)
        .env("KEEL_STORAGE__DURABILITY", "async")
        .env("KEEL_KEY", "kl_whatever")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("postgres://keel:***@db/keel"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("durability = \"async\""), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\ndurabilty = \"durable\"\n").unwrap();
    let out = keel_bin()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("storage.durabilty") && stderr.contains("bad.toml"),
        "{stderr}"
    );
}
