//! Ledger benchmark with real storage: SQLite append throughput with sealing, proof generation
//! time, and `verify_log` over a large log. Run: `cargo bench -p keel-audit [-- EVENTS]`
//! (default 1,000,000 events).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use keel_audit::{issue_checkpoint, verify_log, LedgerSigner};
use keel_core::{ManualClock, NewEvent};
use keel_store::{Durability, SqliteOptions, SqliteStore, Store};

fn event(i: u64) -> NewEvent {
    NewEvent {
        kind: "InteractionRecorded".into(),
        actor: "bench".into(),
        tenant: "acme".into(),
        at_ms: 1_700_000_000_000 + i as i64,
        payload: serde_json::json!({"id": format!("ix_{i}"), "context": {"tenant": "acme", "conversation_id": format!("c{}", i % 1000)},
            "response_text": ["a typical short answer of some forty characters"], "outcome": "ok"}),
    }
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let store = Arc::new(
            SqliteStore::open(SqliteOptions::new(url.clone(), Durability::Durable))
                .await
                .expect("open"),
        );
        // Durable appends from 64 concurrent writers (group commit), 20k events.
        let t = Instant::now();
        let durable_n = 20_000u64;
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..durable_n).step_by(64) {
                    store.append(vec![event(i)]).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let secs = t.elapsed().as_secs_f64();
        println!("sqlite durable appends (64 concurrent writers, group commit): {:.0} events/s ({durable_n} in {secs:.2}s)", durable_n as f64 / secs);

        // Bulk: the rest in batches of 512 per append.
        let t = Instant::now();
        let mut i = durable_n;
        while i < n {
            let end = (i + 512).min(n);
            store.append((i..end).map(event).collect()).await.expect("append");
            i = end;
        }
        let secs = t.elapsed().as_secs_f64();
        println!("sqlite bulk appends (batches of 512): {:.0} events/s ({} in {secs:.1}s)", (n - durable_n) as f64 / secs, n - durable_n);

        let size = store.ledger_size().await.expect("size");
        let t = Instant::now();
        let reps = 2_000u64;
        for k in 0..reps {
            let idx = (k * 7919) % size;
            store.inclusion_proof(idx, size).await.expect("proof");
        }
        println!("inclusion proof from SQLite: {:.1} µs mean over {reps} (tree of {size})", t.elapsed().as_secs_f64() * 1e6 / reps as f64);
        let t = Instant::now();
        for k in 1..=reps {
            let from = 1 + (k * 7919) % (size - 1);
            store.consistency_proof(from, size).await.expect("proof");
        }
        println!("consistency proof from SQLite: {:.1} µs mean over {reps}", t.elapsed().as_secs_f64() * 1e6 / reps as f64);

        let clock = ManualClock::new(1_800_000_000_000);
        let signer = LedgerSigner::load_or_create(dir.path(), "bench", "bench/ledger").expect("signer");
        issue_checkpoint(store.as_ref(), &signer, &clock).await.expect("checkpoint");
        let verifier = keel_ledger::VerifierKey::parse(&signer.verifier_key().expect("vk")).expect("parse");
        let t = Instant::now();
        let report = verify_log(store.as_ref(), &verifier, |_, _| {}).await.expect("verify");
        let secs = t.elapsed().as_secs_f64();
        assert!(report.ok(), "{:?}", report.findings.first());
        println!("verify_log over {} events: {secs:.2}s ({:.0} events/s)", report.events, report.events as f64 / secs);
        store.close().await;
    });
}
