//! Simulated time (`[sim] manual_clock = true`): the manual clock the simulator moves, the
//! event-driven workers the barrier drives, and reproducible ids.
//!
//! In sim mode nothing that appends events runs on a timer: the barrier runs every worker until
//! it has processed everything committed, so a run's outcome depends on the scenario and its
//! seed, not on how fast this machine is. Events that arrived in the same batch are fed to the
//! workers sorted by (time, kind, id) rather than by sequence number, because concurrent
//! requests within one tick commit in whatever order they happen to finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_core::{Clock, ManualClock, StoredEvent};
use keel_loop::watch::Monitor;

/// The state sim mode adds to a running gateway.
#[derive(Debug)]
pub struct SimControl {
    /// The clock every part of the gateway reads.
    pub clock: Arc<ManualClock>,
    /// The monitor worker's detectors (owned here instead of by a timer task).
    pub(crate) monitor: tokio::sync::Mutex<Option<Monitor>>,
    /// Serialises barriers.
    pub(crate) barrier: tokio::sync::Mutex<()>,
    /// (time, occurrences per material digest) for reproducible ids.
    ids: Mutex<(i64, HashMap<[u8; 32], u32>)>,
}

impl SimControl {
    /// Sim state around `clock`.
    pub fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            clock,
            monitor: tokio::sync::Mutex::new(None),
            barrier: tokio::sync::Mutex::new(()),
            ids: Mutex::new((i64::MIN, HashMap::new())),
        }
    }

    /// A reproducible id for `material` at the current simulated time: the n-th identical
    /// material in the same millisecond gets occurrence n, whatever order requests arrive in.
    pub fn id(&self, prefix: &str, material: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let now = self.clock.now_ms();
        let digest: [u8; 32] = Sha256::digest(material).into();
        let occurrence = match self.ids.lock() {
            Ok(mut g) => {
                if g.0 != now {
                    g.0 = now;
                    g.1.clear();
                }
                let n = g.1.entry(digest).or_insert(0);
                let this = *n;
                *n += 1;
                this
            }
            Err(_) => 0,
        };
        keel_core::id::derived_id(prefix, now, &digest, occurrence)
    }
}

/// Orders a batch of events the way sim mode feeds workers: by time, kind and the id the
/// payload carries, then by sequence (only identical events keep commit order).
pub fn order_batch(events: &mut [StoredEvent]) {
    events.sort_by(|a, b| {
        let id = |e: &StoredEvent| {
            e.payload
                .get("id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_default()
        };
        (a.at_ms, a.kind.as_str(), id(a), a.seq).cmp(&(b.at_ms, b.kind.as_str(), id(b), b.seq))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_material_and_occurrence_not_on_call_order() {
        let a = SimControl::new(Arc::new(ManualClock::new(1_000)));
        let b = SimControl::new(Arc::new(ManualClock::new(1_000)));
        let a1 = a.id("ix", b"x");
        let a2 = a.id("ix", b"y");
        let a3 = a.id("ix", b"x");
        let b2 = b.id("ix", b"y");
        let b1 = b.id("ix", b"x");
        let b3 = b.id("ix", b"x");
        assert_eq!((a1.clone(), a2, a3.clone()), (b1, b2, b3));
        assert_ne!(a1, a3);
        a.clock.set_ms(2_000);
        assert_ne!(a.id("ix", b"x"), a1);
    }

    #[test]
    fn batches_sort_by_time_kind_and_id() {
        let ev = |seq: i64, at_ms: i64, kind: &str, id: &str| StoredEvent {
            seq,
            kind: kind.into(),
            actor: "a".into(),
            tenant: "t".into(),
            at_ms,
            payload: serde_json::json!({"id": id}),
        };
        let mut batch = vec![
            ev(1, 10, "B", "z"),
            ev(2, 10, "A", "y"),
            ev(3, 5, "B", "x"),
            ev(4, 10, "A", "b"),
        ];
        order_batch(&mut batch);
        let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 2, 1]);
    }
}
