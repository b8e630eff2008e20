//! The real `openai` Python SDK against the gateway (run by `cargo xtask ci`, which installs the
//! SDK into a venv and sets KEEL_SDK_PYTHON).

use crate::support::*;

#[tokio::test]
#[ignore = "needs the openai SDK venv: run by `cargo xtask ci` (sets KEEL_SDK_PYTHON)"]
async fn sdk_openai_python_client() {
    let python = std::env::var("KEEL_SDK_PYTHON")
        .expect("KEEL_SDK_PYTHON must point at a python with `openai` installed");
    let p = Pair::start(Script::new()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_check.py");
    let base = format!("{}/v1", p.gw.url());
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("KEEL_BASE_URL", &base)
        .env("KEEL_API_KEY", &p.app)
        .env("KEEL_REVIEWER_KEY", &p.reviewer)
        .env("KEEL_ROOT_URL", p.gw.url())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("sdk checks passed"), "{stdout}");
    let sent = p.mock.requests();
    assert!(
        sent.iter().any(|r| r["stream"] == true),
        "the SDK streamed through the gateway"
    );
}

#[tokio::test]
#[ignore = "needs the venv with `cryptography`: run by `cargo xtask ci` (sets KEEL_SDK_PYTHON)"]
async fn sdk_python_auditor_verifies_without_keel() {
    let python = std::env::var("KEEL_SDK_PYTHON").expect("KEEL_SDK_PYTHON");
    let p = Pair::start(Script::new()).await;
    let auditor = p.gw.key("acme", "auditor", Some("external-auditor")).await;
    let mut last = String::new();
    for i in 0..7 {
        let r = p
            .chat(serde_json::json!({"model": "m", "messages": user(&format!("audit {i}"))}))
            .await;
        last = r.headers()["x-keel-interaction-id"]
            .to_str()
            .unwrap()
            .to_string();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/audit_check.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("KEEL_ROOT_URL", p.gw.url())
        .env("KEEL_AUDITOR_KEY", &auditor)
        .env("KEEL_APP_KEY", &p.app)
        .env("KEEL_INTERACTION_ID", &last)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "auditor script failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit checks passed"), "{stdout}");
    // "leaf I in tree N, consistent to M": the consistency proof spanned two sizes.
    let sizes: Vec<u64> = stdout
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        matches!(sizes.as_slice(), [_, n, m] if m > n),
        "checkpoints of different sizes: {stdout}"
    );
}
