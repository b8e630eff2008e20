//! `audit verify`: recompute every leaf from the stored events and the whole tree, and check
//! every checkpoint's signature and root. Trusts nothing it reads back.

use std::collections::HashMap;

use keel_ledger::{
    payload_commitment, verify_checkpoint_with, verify_consistency, EventLeaf, Frontier, Hash,
    VerifierKey,
};
use keel_store::{LeafRow, LedgerRow, Store};
use serde::Serialize;

use crate::AuditError;

/// What is wrong at one place of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The stored payload no longer matches its commitment.
    PayloadChanged,
    /// The event's header (kind, actor, tenant, time) no longer matches its leaf.
    HeaderChanged,
    /// A leaf exists but its event is gone.
    EventMissing,
    /// An event exists that was never sealed in the ledger.
    EventInserted,
    /// The event holds content committed at another index.
    Reordered,
    /// The stored leaf rows are inconsistent (index, hash) with the events.
    LeafChanged,
    /// A checkpoint's signature does not verify, or its text disagrees with its stored root.
    SignatureInvalid,
    /// A signed checkpoint's root differs from the root recomputed from the events.
    CheckpointRootMismatch,
    /// The stored tree nodes disagree with the recomputed tree.
    TreeChanged,
}

/// One problem, with the ledger index it concerns (if any).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub index: Option<u64>,
    pub kind: FindingKind,
    pub detail: String,
}

/// The outcome of a full verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub events: u64,
    pub leaves: u64,
    pub erased: u64,
    pub checkpoints: u64,
    #[serde(serialize_with = "ser_hash")]
    pub root: Hash,
    pub findings: Vec<Finding>,
}

fn ser_hash<S: serde::Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&keel_ledger::encode_hash(h))
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    /// The finding with the lowest index (index-less findings last).
    pub fn first(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .min_by_key(|f| f.index.unwrap_or(u64::MAX))
    }
}

const PAGE: u32 = 50_000;
const MAX_FINDINGS: usize = 1_000;

struct Pages<'a> {
    store: &'a dyn Store,
    events: std::vec::IntoIter<LedgerRow>,
    leaves: std::vec::IntoIter<LeafRow>,
    last_seq: i64,
    next_leaf: u64,
    events_done: bool,
    leaves_done: bool,
}

impl Pages<'_> {
    async fn event(&mut self) -> Result<Option<LedgerRow>, AuditError> {
        loop {
            if let Some(e) = self.events.next() {
                self.last_seq = e.seq;
                return Ok(Some(e));
            }
            if self.events_done {
                return Ok(None);
            }
            let page = self.store.ledger_rows(self.last_seq, PAGE).await?;
            self.events_done = page.len() < PAGE as usize;
            self.events = page.into_iter();
        }
    }

    async fn leaf(&mut self) -> Result<Option<LeafRow>, AuditError> {
        loop {
            if let Some(l) = self.leaves.next() {
                self.next_leaf = l.ledger_index as u64 + 1;
                return Ok(Some(l));
            }
            if self.leaves_done {
                return Ok(None);
            }
            let page = self.store.leaves(self.next_leaf, PAGE).await?;
            self.leaves_done = page.len() < PAGE as usize;
            self.leaves = page.into_iter();
        }
    }
}

fn to_hash(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

/// Verifies the whole log against `verifier` (the checkpoint key). `progress(done, total)` is
/// called every few thousand events.
pub async fn verify_log(
    store: &dyn Store,
    verifier: &VerifierKey,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, AuditError> {
    let total = store.last_seq().await?.max(0) as u64;
    let checkpoints = store.checkpoints().await?;
    let mut findings: Vec<Finding> = Vec::new();
    let push = |f: Finding, findings: &mut Vec<Finding>| {
        if findings.len() < MAX_FINDINGS {
            findings.push(f);
        }
    };

    // Checkpoint signatures first: each must verify and agree with its stored columns.
    let mut signed: Vec<(u64, Hash)> = Vec::new();
    for cp in &checkpoints {
        match verify_checkpoint_with(&cp.note, verifier) {
            Ok(c) if c.size == cp.size && c.root == cp.root => signed.push((c.size, c.root)),
            Ok(c) => push(
                Finding {
                    index: Some(cp.size.saturating_sub(1)),
                    kind: FindingKind::SignatureInvalid,
                    detail: format!(
                        "checkpoint at size {}: the signed note says size {} and another root",
                        cp.size, c.size
                    ),
                },
                &mut findings,
            ),
            Err(e) => push(
                Finding {
                    index: Some(cp.size.saturating_sub(1)),
                    kind: FindingKind::SignatureInvalid,
                    detail: format!("checkpoint at size {}: {e}", cp.size),
                },
                &mut findings,
            ),
        }
    }
    let mut next_cp = signed.iter().peekable();

    let mut pages = Pages {
        store,
        events: Vec::new().into_iter(),
        leaves: Vec::new().into_iter(),
        last_seq: 0,
        next_leaf: 0,
        events_done: false,
        leaves_done: false,
    };
    let mut frontier = Frontier::new();
    let mut erased = 0u64;
    let mut events = 0u64;
    let mut leaves = 0u64;
    // Mismatched payloads, to recognise content moved between indices afterwards.
    let mut mismatched: Vec<(u64, String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut ev = pages.event().await?;
    let mut lf = pages.leaf().await?;
    loop {
        let index = frontier.size();
        let (e, l) = match (ev.take(), lf.take()) {
            (None, None) => break,
            (Some(e), Some(l)) if e.seq == l.seq => (Some(e), Some(l)),
            (Some(e), Some(l)) if e.seq < l.seq => {
                lf = Some(l);
                (Some(e), None)
            }
            (Some(e), Some(l)) => {
                ev = Some(e);
                (None, Some(l))
            }
            (e, l) => (e, l),
        };
        match (e, l) {
            (Some(e), Some(l)) => {
                events += 1;
                leaves += 1;
                if l.ledger_index as u64 != index {
                    push(
                        Finding {
                            index: Some(index),
                            kind: FindingKind::LeafChanged,
                            detail: format!(
                                "the leaf for seq {} claims index {}",
                                l.seq, l.ledger_index
                            ),
                        },
                        &mut findings,
                    );
                }
                let stored_hash = to_hash(&l.payload_hash).unwrap_or([0; 32]);
                let payload_hash = match (&e.payload, &l.salt) {
                    (Some(p), Some(salt)) => {
                        let h = payload_commitment(salt, p.as_bytes());
                        if h != stored_hash {
                            push(
                                Finding {
                                    index: Some(index),
                                    kind: FindingKind::PayloadChanged,
                                    detail: format!(
                                        "seq {}: the payload does not match its commitment",
                                        e.seq
                                    ),
                                },
                                &mut findings,
                            );
                            mismatched.push((
                                index,
                                p.clone(),
                                salt.clone(),
                                l.payload_hash.clone(),
                            ));
                        }
                        h
                    }
                    (None, None) => {
                        erased += 1;
                        stored_hash
                    }
                    (Some(_), None) => {
                        push(
                            Finding {
                                index: Some(index),
                                kind: FindingKind::PayloadChanged,
                                detail: format!(
                                    "seq {}: a payload is present but its salt was erased",
                                    e.seq
                                ),
                            },
                            &mut findings,
                        );
                        stored_hash
                    }
                    (None, Some(_)) => {
                        push(
                            Finding {
                                index: Some(index),
                                kind: FindingKind::PayloadChanged,
                                detail: format!(
                                    "seq {}: the payload is gone but no erasure removed its salt",
                                    e.seq
                                ),
                            },
                            &mut findings,
                        );
                        stored_hash
                    }
                };
                let sealed = EventLeaf {
                    seq: e.seq as u64,
                    ledger_index: index,
                    at_unix_ms: e.at_ms,
                    kind: e.kind,
                    actor: e.actor,
                    tenant: e.tenant,
                    payload_hash: stored_hash,
                };
                let header_leaf = sealed.leaf_hash();
                let leaf = if payload_hash == stored_hash {
                    header_leaf
                } else {
                    EventLeaf {
                        payload_hash,
                        ..sealed
                    }
                    .leaf_hash()
                };
                if Some(header_leaf) != to_hash(&l.leaf_hash) && payload_hash == stored_hash {
                    push(
                        Finding {
                            index: Some(index),
                            kind: FindingKind::HeaderChanged,
                            detail: format!(
                                "seq {}: kind, actor, tenant or time differ from what was sealed",
                                e.seq
                            ),
                        },
                        &mut findings,
                    );
                }
                frontier.push(leaf);
                ev = pages.event().await?;
                lf = pages.leaf().await?;
            }
            (Some(e), None) => {
                events += 1;
                push(
                    Finding {
                        index: Some(index),
                        kind: FindingKind::EventInserted,
                        detail: format!(
                            "seq {} ({}) was never sealed in the ledger",
                            e.seq, e.kind
                        ),
                    },
                    &mut findings,
                );
                ev = pages.event().await?;
                // An unsealed event has no leaf: the tree continues without it.
                continue;
            }
            (None, Some(l)) => {
                leaves += 1;
                push(
                    Finding {
                        index: Some(index),
                        kind: FindingKind::EventMissing,
                        detail: format!(
                            "the event sealed at index {} (seq {}) is missing",
                            l.ledger_index, l.seq
                        ),
                    },
                    &mut findings,
                );
                // Keep the tree comparable with the checkpoints using the sealed leaf.
                frontier.push(to_hash(&l.leaf_hash).unwrap_or([0; 32]));
                lf = pages.leaf().await?;
            }
            (None, None) => break,
        }
        while let Some(&&(size, root)) = next_cp.peek() {
            if size > frontier.size() {
                break;
            }
            if size == frontier.size() && frontier.root() != root {
                push(Finding { index: Some(size.saturating_sub(1)), kind: FindingKind::CheckpointRootMismatch,
                    detail: format!("the signed checkpoint at size {size} does not match the recomputed tree") }, &mut findings);
            }
            next_cp.next();
        }
        if events.is_multiple_of(8192) {
            progress(events, total);
        }
    }
    for (size, _) in next_cp {
        push(
            Finding {
                index: Some(size.saturating_sub(1)),
                kind: FindingKind::EventMissing,
                detail: format!(
                    "a checkpoint covers {size} leaves but only {} remain",
                    frontier.size()
                ),
            },
            &mut findings,
        );
    }
    // Content found at the wrong index: the payload matches another leaf's commitment.
    if mismatched.len() > 1 && mismatched.len() <= 1000 {
        let by_hash: HashMap<Vec<u8>, u64> = mismatched
            .iter()
            .map(|(i, _, _, h)| (h.clone(), *i))
            .collect();
        for (i, payload, _, _) in &mismatched {
            for (j, _, salt_j, hash_j) in &mismatched {
                if i != j && payload_commitment(salt_j, payload.as_bytes())[..] == hash_j[..] {
                    if let Some(f) = findings
                        .iter_mut()
                        .find(|f| f.index == Some(*i) && f.kind == FindingKind::PayloadChanged)
                    {
                        f.kind = FindingKind::Reordered;
                        f.detail = format!(
                            "index {i} holds the event sealed at index {}",
                            by_hash.get(hash_j).copied().unwrap_or(*j)
                        );
                    }
                }
            }
        }
    }
    // The stored nodes must agree with the recomputed tree, and the last checkpoints must be
    // provably consistent from what is stored.
    let size = frontier.size();
    let root = frontier.root();
    if size > 0 && size == store.ledger_size().await? {
        match store.ledger_root(size).await {
            Ok(r) if r == root => {}
            Ok(_) => push(
                Finding {
                    index: None,
                    kind: FindingKind::TreeChanged,
                    detail: "the stored tree nodes do not match the recomputed tree".into(),
                },
                &mut findings,
            ),
            Err(e) => push(
                Finding {
                    index: None,
                    kind: FindingKind::TreeChanged,
                    detail: format!("the stored tree cannot be read: {e}"),
                },
                &mut findings,
            ),
        }
    }
    if let [.., (a, ra), (b, rb)] = signed.as_slice() {
        if *a > 0 {
            let ok = match store.consistency_proof(*a, *b).await {
                Ok(proof) => verify_consistency(*a, *b, ra, rb, &proof).is_ok(),
                Err(_) => false,
            };
            if !ok {
                push(
                    Finding {
                        index: Some(b.saturating_sub(1)),
                        kind: FindingKind::TreeChanged,
                        detail: format!("no valid consistency proof from checkpoint {a} to {b}"),
                    },
                    &mut findings,
                );
            }
        }
    }
    progress(events, total);
    findings.sort_by_key(|f| f.index.unwrap_or(u64::MAX));
    Ok(VerifyReport {
        events,
        leaves,
        erased,
        checkpoints: checkpoints.len() as u64,
        root,
        findings,
    })
}
