//! The ledger through the real surfaces: proofs over HTTP verified against signed checkpoints,
//! and `keel audit verify` catching tampering done with plain SQL on the database file.

use std::process::Output;

use keel_ledger::{decode_hash, verify_checkpoint, verify_consistency, verify_inclusion};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::support::*;

async fn text(p: &Pair, method: &str, path: &str, key: &str) -> (u16, String) {
    let r = client()
        .request(method.parse().unwrap(), p.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn chat_ids(p: &Pair, n: usize, conv: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = p
            .chat(json!({"model": "m", "messages": user(&format!("msg {i}")),
                         "metadata": {"conversation_id": conv, "user": "u-1"}}))
            .await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.headers()["x-keel-interaction-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    ids
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_against_signed_checkpoints() {
    let p = Pair::start(Script::new()).await;
    let auditor = p.gw.key("acme", "auditor", Some("audrey")).await;
    let (s, pubkey) = text(&p, "GET", "/api/ledger/pubkey", &auditor).await;
    assert_eq!(s, 200);
    let pubkey = pubkey.trim().to_string();
    assert!(pubkey.starts_with("keel+"), "{pubkey}");

    let ids = chat_ids(&p, 3, "c1").await;
    let (s, note1) = text(&p, "GET", "/api/ledger/checkpoint", &auditor).await;
    assert_eq!(s, 200, "{note1}");
    let cp1 = verify_checkpoint(&note1, &pubkey).unwrap();

    // The checkpoint covers the interaction just recorded: prove it.
    let (_, rec) = get_json(&p.url(&format!("/api/interactions/{}", ids[2])), &auditor).await;
    let index = rec["ledger_index"].as_u64().expect("ledger_index");
    assert!(index < cp1.size);
    let (s, proof) = get_json(
        &p.url(&format!(
            "/api/ledger/proof/inclusion?index={index}&size={}",
            cp1.size
        )),
        &auditor,
    )
    .await;
    assert_eq!(s, 200, "{proof}");
    let leaf = decode_hash(proof["leaf_hash"].as_str().unwrap()).unwrap();
    let path: Vec<_> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| decode_hash(h.as_str().unwrap()).unwrap())
        .collect();
    verify_inclusion(&leaf, index, cp1.size, &path, &cp1.root).unwrap();

    chat_ids(&p, 5, "c2").await;
    let (s, note2) = text(&p, "POST", "/api/ledger/checkpoint", &auditor).await;
    assert_eq!(s, 200);
    let cp2 = verify_checkpoint(&note2, &pubkey).unwrap();
    assert!(cp2.size >= cp1.size + 5);
    let (s, cons) = get_json(
        &p.url(&format!(
            "/api/ledger/proof/consistency?from={}&to={}",
            cp1.size, cp2.size
        )),
        &auditor,
    )
    .await;
    assert_eq!(s, 200, "{cons}");
    let path: Vec<_> = cons["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| decode_hash(h.as_str().unwrap()).unwrap())
        .collect();
    verify_consistency(cp1.size, cp2.size, &cp1.root, &cp2.root, &path).unwrap();

    // The leaf endpoint gives what an auditor needs to recompute the leaf hash.
    let (s, l) = get_json(&p.url(&format!("/api/ledger/leaves/{index}")), &auditor).await;
    assert_eq!(s, 200);
    assert_eq!(l["leaf_hash"], proof["leaf_hash"]);
    assert_eq!(l["kind"], "InteractionRecorded");
}

#[tokio::test]
async fn ledger_endpoints_check_roles_and_parameters() {
    let p = Pair::start(Script::new()).await;
    let auditor = p.gw.key("acme", "auditor", None).await;
    let other = p.gw.key("globex", "auditor", None).await;
    chat_ids(&p, 2, "c").await;
    for (path, key, status) in [
        ("/api/ledger/pubkey", p.app.as_str(), 403),
        ("/api/ledger/checkpoint", p.reviewer.as_str(), 403),
        ("/api/ledger/proof/inclusion", auditor.as_str(), 400),
        (
            "/api/ledger/proof/inclusion?index=abc",
            auditor.as_str(),
            400,
        ),
        (
            "/api/ledger/proof/inclusion?index=0&size=99999",
            auditor.as_str(),
            400,
        ),
        (
            "/api/ledger/proof/inclusion?index=5&size=3",
            auditor.as_str(),
            400,
        ),
        (
            "/api/ledger/proof/consistency?from=0&to=2",
            auditor.as_str(),
            400,
        ),
        (
            "/api/ledger/proof/consistency?from=3&to=2",
            auditor.as_str(),
            400,
        ),
        (
            "/api/ledger/proof/consistency?from=1&to=99999",
            auditor.as_str(),
            400,
        ),
        ("/api/ledger/leaves/99999", auditor.as_str(), 404),
        ("/api/ledger/leaves/not-a-number", auditor.as_str(), 404),
    ] {
        let (s, body) = get_json(&p.url(path), key).await;
        assert_eq!(s, status, "{path}: {body}");
        assert_error_shape(&body);
    }
    // Interactions are leaves 2 and 3 (keys are 0 and 1, ...): another tenant cannot read them.
    let (_, rec) = p.api("/api/interactions?limit=1").await;
    let index = rec["data"][0]["ledger_index"].as_u64().unwrap();
    let (s, _) = get_json(&p.url(&format!("/api/ledger/leaves/{index}")), &other).await;
    assert_eq!(s, 404);
}

fn audit(cfg: &std::path::Path, args: &[&str]) -> Output {
    keel_bin()
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap()
}

/// A gateway with some history and a checkpoint, shut down; returns its dir and config path.
async fn history() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let p = Pair::start(Script::new()).await;
    chat_ids(&p, 6, "conv-a").await;
    chat_ids(&p, 4, "conv-b").await;
    let auditor = p.gw.key("acme", "auditor", None).await;
    let (s, _) = text(&p, "POST", "/api/ledger/checkpoint", &auditor).await;
    assert_eq!(s, 200);
    let url = p.gw.config.storage_url();
    let cfg = p.gw.config_path.clone();
    let dir = p.gw.shutdown().await;
    (dir, cfg, url)
}

async fn sql(url: &str, statements: &[&str]) {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    // Like the sqlite3 shell: no foreign keys, no triggers, nothing in the way.
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut c)
        .await
        .unwrap();
    for s in statements {
        sqlx::query(s)
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    c.close().await.unwrap();
}

/// Tampering → `audit verify` fails, naming `needle` (kind and index) on stderr.
async fn check_tamper(statements: &[&str], needle: &str) {
    let (_dir, cfg, url) = history().await;
    let before = audit(&cfg, &["verify"]);
    assert!(
        before.status.success(),
        "clean log must verify: {}",
        String::from_utf8_lossy(&before.stderr)
    );
    sql(&url, statements).await;
    let after = audit(&cfg, &["verify"]);
    let err = String::from_utf8_lossy(&after.stderr);
    assert!(
        !after.status.success(),
        "tampering {statements:?} went unnoticed"
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[tokio::test]
async fn verify_names_a_changed_payload() {
    check_tamper(
        &["UPDATE events SET payload = replace(payload, 'msg 3', 'msg 4') WHERE seq = 6"],
        "index 5: PayloadChanged",
    )
    .await;
}

#[tokio::test]
async fn verify_names_a_deleted_event() {
    check_tamper(
        &["DELETE FROM events WHERE seq = 5"],
        "index 4: EventMissing",
    )
    .await;
}

#[tokio::test]
async fn verify_names_swapped_events() {
    check_tamper(
        &[
            "CREATE TEMP TABLE sw AS SELECT seq, payload FROM events WHERE seq IN (6, 7)",
            "UPDATE events SET payload = (SELECT payload FROM sw WHERE sw.seq = 7) WHERE seq = 6",
            "UPDATE events SET payload = (SELECT payload FROM sw WHERE sw.seq = 6) WHERE seq = 7",
        ],
        "index 5: Reordered",
    )
    .await;
}

#[tokio::test]
async fn verify_names_an_inserted_event() {
    check_tamper(
        &["INSERT INTO events (seq, kind, actor, tenant, at_ms, payload) SELECT MAX(seq) + 1, 'KeyCreated', 'mallory', 'acme', 0, '{}' FROM events"],
        "EventInserted",
    )
    .await;
}

#[tokio::test]
async fn verify_names_an_altered_checkpoint() {
    check_tamper(
        &["UPDATE ledger_checkpoints SET note = replace(note, char(10) || '1', char(10) || '9') WHERE size = (SELECT MAX(size) FROM ledger_checkpoints)"],
        "SignatureInvalid",
    )
    .await;
}

#[tokio::test]
async fn erasure_keeps_the_log_verifiable() {
    let (_dir, cfg, _url) = history().await;
    let out = audit(
        &cfg,
        &[
            "erase",
            "--conversation",
            "conv-a",
            "--reason",
            "GDPR request #1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
    let out = audit(&cfg, &["erase", "--index", "0", "--reason", "x"]);
    assert!(!out.status.success(), "a key event is not erasable");
    let v = audit(&cfg, &["verify"]);
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success(), "{err}");
    assert!(err.contains("6 erased payloads"), "{err}");
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "OK");

    let prove = audit(&cfg, &["prove", "--index", "3"]);
    assert!(prove.status.success());
    let proof: Value = serde_json::from_slice(&prove.stdout).unwrap();
    assert_eq!(proof["index"], 3);
    let pk = audit(&cfg, &["pubkey"]);
    assert!(String::from_utf8_lossy(&pk.stdout).starts_with("keel+"));
    let cp = audit(&cfg, &["checkpoint"]);
    let note = String::from_utf8_lossy(&cp.stdout).to_string();
    let checkpoint = verify_checkpoint(&note, String::from_utf8_lossy(&pk.stdout).trim()).unwrap();
    assert!(checkpoint.size >= 13, "the erasure events are leaves too");
}

#[test]
fn the_signing_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", dir.path().display())).unwrap();
    let out = audit(&cfg, &["pubkey"]);
    assert!(out.status.success());
    let meta = std::fs::metadata(dir.path().join("ledger-signing.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let again = audit(&cfg, &["pubkey"]);
    assert_eq!(
        out.stdout, again.stdout,
        "the key is created once and reused"
    );
}

/// Regression: a verifier key's base64 part may contain `+` (the auditor script once split on
/// every `+` and failed for such keys, depending on the random key).
#[test]
fn verifier_keys_whose_base64_contains_plus_parse() {
    let mut found = 0;
    for i in 0u8..=255 {
        let key = ed25519_dalek::SigningKey::from_bytes(&[i; 32]);
        let text = keel_ledger::verifier_key_string("keel", &key.verifying_key()).unwrap();
        let b64 = text.splitn(3, '+').nth(2).unwrap();
        if b64.contains('+') {
            found += 1;
            let parsed = keel_ledger::VerifierKey::parse(&text).unwrap();
            assert_eq!(parsed.verifying_key(), &key.verifying_key(), "{text}");
        }
    }
    assert!(
        found > 0,
        "the sample must include keys with '+' in their base64"
    );
}
