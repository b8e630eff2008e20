//! Durability: concurrent appenders in two processes, and kill -9 in the middle of a burst.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn cli_appends_during_load_keep_one_gap_free_sequence() {
    let p = Arc::new(Pair::start(Script::new()).await);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let r = p
                    .chat(json!({"model": "m", "messages": user(&format!("{t}-{i}"))}))
                    .await;
                assert_eq!(r.status(), 200);
            }
        }));
    }
    let cfg = p.gw.config_path.clone();
    let cli = tokio::task::spawn_blocking(move || {
        (0..5)
            .map(|i| {
                keel_bin()
                    .args([
                        "keys",
                        "create",
                        "--tenant",
                        "acme",
                        "--role",
                        "auditor",
                        "--name",
                        &format!("cli-{i}"),
                    ])
                    .arg("--config")
                    .arg(&cfg)
                    .output()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    for t in tasks {
        t.await.unwrap();
    }
    for out in cli.await.unwrap() {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let events = p.gw.store.events_after(0, 10_000).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "one gap-free sequence across processes");
    let interactions = events
        .iter()
        .filter(|e| e.kind == "InteractionRecorded")
        .count();
    assert_eq!(interactions, 200);
    let keys = p.gw.store.list_keys().await.unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.name.as_deref().is_some_and(|n| n.starts_with("cli-")))
            .count(),
        5
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `keel serve` (`durability` mode) on a free port in its own data dir, in front of
/// `mock`, with an app key made by the CLI. Returns (child, base url, token, data dir).
async fn spawn_server(
    mock: &MockHandle,
    durability: &str,
) -> (std::process::Child, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\n[storage]\nurl = \"sqlite://{d}/keel.db\"\ndurability = \"{durability}\"\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{u}\"\nmodels = [\"*\"]\n",
            d = dir.path().display(),
            u = mock.base_url()
        ),
    )
    .unwrap();
    let key = keel_bin()
        .args(["keys", "create", "--tenant", "acme", "--role", "app"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(key.status.success());
    let token = String::from_utf8_lossy(&key.stdout).trim().to_string();
    let child = keel_bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "server did not come up");
    (child, base, token, dir)
}

#[tokio::test]
async fn kill_9_during_a_burst_loses_no_acknowledged_interaction() {
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let (mut child, base, token, dir) = spawn_server(&mock, "durable").await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let acked = acked.clone();
        let base = base.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            for i in 0..10_000 {
                let r = c
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&json!({"model": "m", "messages": user(&format!("{t}-{i}"))}))
                    .send()
                    .await;
                let Ok(r) = r else { return };
                if r.status() != 200 {
                    return;
                }
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                acked
                    .lock()
                    .unwrap()
                    .push(body["id"].as_str().unwrap().to_string());
            }
        }));
    }
    // Let the burst build up, then kill -9 mid-flight.
    for _ in 0..400 {
        if acked.lock().unwrap().len() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "too few requests acknowledged before the kill: {}",
        acked.len()
    );

    let store = SqliteStore::open(SqliteOptions::new(
        format!("sqlite://{}/keel.db", dir.path().display()),
        keel_store::Durability::Durable,
    ))
    .await
    .unwrap();
    let mut missing = Vec::new();
    for id in &acked {
        if store.interaction(id).await.unwrap().is_none() {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged interactions lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    store.close().await;
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let mock = MockUpstream::start(Script::new().then(Reply::stream(
        ["slow ", "but ", "complete"],
        Duration::from_millis(300),
    )))
    .await
    .unwrap();
    let (mut child, base, token, dir) = spawn_server(&mock, "durable").await;
    // A stream in flight when SIGTERM arrives still completes.
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let inflight = tokio::spawn({
        let base = base.clone();
        let token = token.clone();
        async move {
            let r = client()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&token)
                .json(&json!({"model": "m", "messages": user("x"), "stream": true}))
                .send()
                .await
                .unwrap();
            let _ = started_tx.send(());
            let id = r.headers()["x-keel-interaction-id"]
                .to_str()
                .unwrap()
                .to_string();
            (id, r.text().await.unwrap())
        }
    });
    // SIGTERM once the stream is in flight (its headers have arrived).
    started.await.unwrap();
    let term = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let (id, body) = inflight.await.unwrap();
    assert!(
        body.contains("[DONE]"),
        "the in-flight stream completed: {body}"
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let store = SqliteStore::open(SqliteOptions::new(
        format!("sqlite://{}/keel.db", dir.path().display()),
        keel_store::Durability::Durable,
    ))
    .await
    .unwrap();
    let rec = store.interaction(&id).await.unwrap().expect("recorded");
    assert_eq!(rec.record["outcome"], "ok");
    store.close().await;
}

/// Holds SQLite's write lock on the server's database until dropped or rolled back: the
/// server's writer cannot commit (it waits up to its 10 s busy timeout).
async fn stall_commits(dir: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}/keel.db", dir.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn release(mut conn: sqlx::SqliteConnection) {
    use sqlx::Connection;
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// How many of `ids` the database at `dir` holds.
async fn stored(dir: &std::path::Path, ids: &[String]) -> usize {
    let store = SqliteStore::open(SqliteOptions::new(
        format!("sqlite://{}/keel.db", dir.display()),
        keel_store::Durability::Durable,
    ))
    .await
    .unwrap();
    let mut n = 0;
    for id in ids {
        n += usize::from(store.interaction(id).await.unwrap().is_some());
    }
    store.close().await;
    n
}

/// `n` concurrent chat requests; each task yields the interaction id if the reply was a 200.
fn send_concurrently(
    base: &str,
    token: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Option<String>>> {
    (0..n)
        .map(|i| {
            let (base, token) = (base.to_string(), token.to_string());
            tokio::spawn(async move {
                let r = client()
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&json!({"model": "m", "messages": user(&format!("stalled {i}"))}))
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                let body: Value = r.json().await.ok()?;
                Some(body["id"].as_str()?.to_string())
            })
        })
        .collect()
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The negative control of the kill -9 test: the same kill, with commits held back, in `async`
/// mode. Replies go out before the commit, so the kill loses every one of them — the harness
/// can see a loss, so its "nothing lost" in `durable` mode means something.
#[tokio::test]
async fn kill_9_in_async_mode_loses_acknowledged_interactions() {
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let (mut child, base, token, dir) = spawn_server(&mock, "async").await;
    let lock = stall_commits(dir.path()).await;
    let mut acked = Vec::new();
    for task in send_concurrently(&base, &token, 8) {
        acked.extend(task.await.unwrap());
    }
    assert_eq!(acked.len(), 8, "async mode acknowledges before its commit");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    release(lock).await;
    assert_eq!(
        stored(dir.path(), &acked).await,
        0,
        "every acknowledged interaction was lost"
    );
}

/// In `durable` mode a reply waits for its commit: while commits are held back, requests reach
/// the upstream but none is acknowledged, so the kill cannot lose an acknowledged one.
#[tokio::test]
async fn kill_9_in_durable_mode_with_commits_stalled_acknowledges_nothing() {
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let (mut child, base, token, dir) = spawn_server(&mock, "durable").await;
    let lock = stall_commits(dir.path()).await;
    let tasks = send_concurrently(&base, &token, 8);
    // Every request has been answered upstream: all that is left is the commit (and, in a
    // broken build, the early reply the async control shows).
    wait_for("the upstream saw all 8 requests", || {
        mock.request_count() == 8
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    release(lock).await;
    assert!(
        acked.is_empty(),
        "acknowledged before its commit: {acked:?}"
    );
}

/// SIGTERM flushes what async mode acknowledged but had not committed: the commits are held
/// back until the server has stopped accepting (it is draining and flushing), then let go.
/// Without the flush in `keel_gateway::serve` the process exits first and they are lost.
#[tokio::test]
async fn sigterm_flushes_async_appends() {
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let (mut child, base, token, dir) = spawn_server(&mock, "async").await;
    let lock = stall_commits(dir.path()).await;
    let mut acked = Vec::new();
    for task in send_concurrently(&base, &token, 5) {
        acked.extend(task.await.unwrap());
    }
    assert_eq!(acked.len(), 5);
    let term = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let addr = base.trim_start_matches("http://").to_string();
    wait_for("the server stopped accepting", || {
        std::net::TcpStream::connect(&addr).is_err()
    })
    .await;
    release(lock).await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert_eq!(stored(dir.path(), &acked).await, 5, "flushed before exit");
}
