//! Event leaves: canonical encoding layout, unambiguity, payload commitments, a pinned vector.

use keel_ledger::{leaf_hash, payload_commitment, EventLeaf, MemoryTree};
use sha2::{Digest, Sha256};

fn sample() -> EventLeaf {
    EventLeaf {
        seq: 7,
        ledger_index: 6,
        at_unix_ms: 1_700_000_000_123,
        kind: "Interaction".into(),
        actor: "key:abc".into(),
        tenant: "acme".into(),
        payload_hash: payload_commitment(&[9u8; 32], br#"{"q":"hi"}"#),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the encoding of `leaf` against a layout built by hand from the documented table.
fn check(leaf: &EventLeaf) {
    let mut want = b"keel-event/v1\n".to_vec();
    want.extend(leaf.seq.to_be_bytes());
    want.extend(leaf.ledger_index.to_be_bytes());
    want.extend(leaf.at_unix_ms.to_be_bytes());
    for s in [&leaf.kind, &leaf.actor, &leaf.tenant] {
        want.extend((s.len() as u64).to_be_bytes());
        want.extend(s.as_bytes());
    }
    want.extend(leaf.payload_hash);
    assert_eq!(leaf.canonical_bytes(), want);
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(&want);
    assert_eq!(leaf.leaf_hash().as_slice(), h.finalize().as_slice());
    assert_eq!(leaf.leaf_hash(), leaf_hash(&want));
}

#[test]
fn canonical_encoding_follows_the_documented_layout() {
    check(&sample());
    check(&EventLeaf {
        at_unix_ms: -1,
        kind: String::new(),
        actor: "é✓".into(),
        ..sample()
    });
    check(&EventLeaf {
        seq: u64::MAX,
        ledger_index: 0,
        at_unix_ms: i64::MIN,
        ..sample()
    });
}

#[test]
fn pinned_vector() {
    // Computed independently (Python hashlib) from the documented layout; changing the encoding
    // would orphan every existing ledger, so this must never change.
    assert_eq!(
        hex(&sample().payload_hash),
        "9ef7ddadcd115581689332e48adb31c476d66821137761b1cf87c68254a146db"
    );
    assert_eq!(
        hex(&sample().leaf_hash()),
        "f1d4edb8873c2a607e99b1a6e602605a54d88507a838ef366be7a5021d7859d5"
    );
}

#[test]
fn field_boundaries_are_unambiguous() {
    let a = EventLeaf {
        kind: "ab".into(),
        actor: "c".into(),
        ..sample()
    };
    let b = EventLeaf {
        kind: "a".into(),
        actor: "bc".into(),
        ..sample()
    };
    assert_ne!(a.leaf_hash(), b.leaf_hash());
    let c = EventLeaf {
        actor: String::new(),
        tenant: "x".into(),
        ..sample()
    };
    let d = EventLeaf {
        actor: "x".into(),
        tenant: String::new(),
        ..sample()
    };
    assert_ne!(c.leaf_hash(), d.leaf_hash());
    // Every header field matters.
    let base = sample().leaf_hash();
    for changed in [
        EventLeaf { seq: 8, ..sample() },
        EventLeaf {
            ledger_index: 7,
            ..sample()
        },
        EventLeaf {
            at_unix_ms: 1_700_000_000_124,
            ..sample()
        },
        EventLeaf {
            tenant: "acme2".into(),
            ..sample()
        },
    ] {
        assert_ne!(changed.leaf_hash(), base);
    }
}

#[test]
fn payload_commitment_is_salted_and_domain_separated() {
    let p = b"secret";
    assert_ne!(payload_commitment(b"s1", p), payload_commitment(b"s2", p));
    // Salt/payload boundary is length-prefixed.
    assert_ne!(
        payload_commitment(b"ab", b"c"),
        payload_commitment(b"a", b"bc")
    );
    // Not a bare hash of the payload.
    assert_ne!(
        payload_commitment(b"", p).as_slice(),
        Sha256::digest(p).as_slice()
    );
}

#[test]
fn erasing_a_payload_keeps_proofs_valid() {
    // The store keeps the leaf header and payload_hash; payload and salt go. Recomputing the leaf
    // from what remains gives the same hash, so the old proof still verifies.
    let leaves: Vec<EventLeaf> = (0..10u64)
        .map(|i| EventLeaf {
            seq: i + 1,
            ledger_index: i,
            payload_hash: payload_commitment(&i.to_le_bytes(), format!("payload {i}").as_bytes()),
            ..sample()
        })
        .collect();
    let mut tree = MemoryTree::new();
    for l in &leaves {
        tree.append(l.leaf_hash());
    }
    let proof = tree.inclusion_proof(4, 10).unwrap();
    let kept = EventLeaf {
        payload_hash: leaves[4].payload_hash,
        ..leaves[4].clone()
    };
    keel_ledger::verify_inclusion(&kept.leaf_hash(), 4, 10, &proof, &tree.root()).unwrap();
    // A changed payload no longer matches its commitment.
    let forged = payload_commitment(&4u64.to_le_bytes(), b"payload 5");
    assert_ne!(forged, leaves[4].payload_hash);
}
