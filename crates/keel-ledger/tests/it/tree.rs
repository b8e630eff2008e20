//! The NodeReader path against a naive recursive RFC 6962 implementation, read counts, and the
//! append step / Frontier against MemoryTree.

use std::cell::Cell;
use std::collections::HashMap;

use keel_ledger::{
    append, consistency_proof, empty_root, inclusion_proof, node_hash, root, root_from_leaves,
    verify_consistency, verify_inclusion, Frontier, Hash, LedgerError, MemoryTree, NodeReader,
};
use proptest::prelude::*;

use crate::tree_of;

// ---- naive RFC 6962 §2.1 (straight from the text) ----

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

const NAIVE_MAX: u64 = 700;

thread_local! {
    static TREE: (MemoryTree, Vec<Hash>) = tree_of(NAIVE_MAX);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn node_reader_path_equals_naive(size in 1u64..=NAIVE_MAX, a in any::<u64>(), b in any::<u64>()) {
        TREE.with(|(tree, leaves)| {
            let d = &leaves[..size as usize];
            let idx = a % size;
            let m = b % size + 1;
            let r = root(tree, size).unwrap();
            prop_assert_eq!(r, mth(d));
            let p = inclusion_proof(tree, idx, size).unwrap();
            prop_assert_eq!(&p, &path(idx as usize, d));
            prop_assert!(verify_inclusion(&d[idx as usize], idx, size, &p, &r).is_ok());
            let c = consistency_proof(tree, m, size).unwrap();
            prop_assert_eq!(&c, &subproof(m as usize, d, true));
            let r1 = mth(&d[..m as usize]);
            prop_assert!(verify_consistency(m, size, &r1, &r, &c).is_ok());
            Ok(())
        })?;
    }
}

#[test]
fn small_trees_exhaustively_equal_naive() {
    let (tree, leaves) = tree_of(70);
    for size in 0..=70u64 {
        let d = &leaves[..size as usize];
        assert_eq!(root(&tree, size).unwrap(), mth(d), "root {size}");
        for idx in 0..size {
            assert_eq!(
                inclusion_proof(&tree, idx, size).unwrap(),
                path(idx as usize, d)
            );
        }
        for m in 1..=size {
            assert_eq!(
                consistency_proof(&tree, m, size).unwrap(),
                subproof(m as usize, d, true)
            );
        }
    }
}

// ---- read counts: O(log n) ----

/// Answers any node that exists in a tree of `size` leaves with a synthetic hash, counting reads.
struct Synthetic {
    size: u64,
    reads: Cell<u64>,
}

impl NodeReader for Synthetic {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.reads.set(self.reads.get() + 1);
        let end = (index + 1)
            .checked_shl(level)
            .filter(|e| (e >> level) == index + 1);
        match end {
            Some(end) if end <= self.size => {
                let mut h = [0u8; 32];
                h[..4].copy_from_slice(&level.to_be_bytes());
                h[4..12].copy_from_slice(&index.to_be_bytes());
                Ok(h)
            }
            _ => Err(LedgerError::MissingNode { level, index }),
        }
    }
}

fn log2_ceil(n: u64) -> u64 {
    u64::from(64 - (n - 1).leading_zeros())
}

#[test]
fn proofs_need_only_logarithmic_reads() {
    for size in [
        1u64,
        2,
        3,
        5,
        1000,
        (1 << 20) + 12345,
        (1 << 40) - 1,
        (1 << 40) + 7,
        u64::MAX / 3,
    ] {
        let store = Synthetic {
            size,
            reads: Cell::new(0),
        };
        root(&store, size).unwrap();
        assert_eq!(
            store.reads.get(),
            u64::from(size.count_ones()),
            "root({size})"
        );
        let bound = 2 * log2_ceil(size.max(2)) + 2;
        for index in [0, size / 3, size / 2, size - 1] {
            store.reads.set(0);
            let p = inclusion_proof(&store, index, size).unwrap();
            assert!(
                store.reads.get() <= bound,
                "inclusion({index}, {size}): {} reads",
                store.reads.get()
            );
            assert!(p.len() as u64 <= log2_ceil(size.max(2)));
        }
        for from in [1, size / 3, size / 2, size - 1, size] {
            if from == 0 {
                continue;
            }
            store.reads.set(0);
            consistency_proof(&store, from, size).unwrap();
            assert!(
                store.reads.get() <= bound,
                "consistency({from}, {size}): {} reads",
                store.reads.get()
            );
        }
        store.reads.set(0);
        Frontier::load(&store, size).unwrap();
        assert_eq!(store.reads.get(), u64::from(size.count_ones()));
    }
}

// ---- append step and Frontier ----

#[derive(Default)]
struct MapStore(HashMap<(u32, u64), Hash>);

impl NodeReader for MapStore {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or(LedgerError::MissingNode { level, index })
    }
}

#[test]
fn append_persists_exactly_the_perfect_subtrees() {
    let (tree, leaves) = tree_of(333);
    let mut store = MapStore::default();
    let mut frontier = Frontier::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let size = i as u64;
        let nodes = append(&store, size, *leaf).unwrap();
        assert_eq!(nodes, frontier.push(*leaf), "append vs frontier at {size}");
        assert_eq!(nodes.len() as u32, 1 + size.trailing_ones());
        for n in nodes {
            assert!(
                store.0.insert((n.level, n.index), n.hash).is_none(),
                "node rewritten"
            );
        }
        let size = size + 1;
        assert_eq!(frontier.size(), size);
        assert_eq!(frontier.root(), root(&store, size).unwrap());
        assert_eq!(Frontier::load(&store, size).unwrap(), frontier);
    }
    // Exactly floor(n / 2^l) nodes at each level, all equal to MemoryTree's.
    let n = leaves.len() as u64;
    let expected: u64 = (0..64).map(|l| n >> l).sum();
    assert_eq!(store.0.len() as u64, expected);
    for (&(level, index), hash) in &store.0 {
        assert_eq!(tree.node(level, index).unwrap(), *hash);
    }
    assert_eq!(root_from_leaves(leaves.iter().copied()), tree.root());
    assert_eq!(tree.frontier().unwrap(), frontier);
}

#[test]
fn errors_instead_of_panics() {
    let (tree, _) = tree_of(10);
    assert!(matches!(
        inclusion_proof(&tree, 10, 10),
        Err(LedgerError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        inclusion_proof(&tree, 0, 0),
        Err(LedgerError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        consistency_proof(&tree, 0, 5),
        Err(LedgerError::InvalidRange { .. })
    ));
    assert!(matches!(
        consistency_proof(&tree, 6, 5),
        Err(LedgerError::InvalidRange { .. })
    ));
    assert_eq!(consistency_proof(&tree, 5, 5).unwrap(), Vec::<Hash>::new());
    // Asking the reader for a size it does not have reports the missing node.
    assert!(matches!(
        root(&tree, 11),
        Err(LedgerError::MissingNode { .. })
    ));
    assert!(matches!(
        tree.root_at(11),
        Err(LedgerError::SizeBeyondTree { .. })
    ));
    assert!(matches!(
        append(&tree, 11, [0; 32]),
        Err(LedgerError::MissingNode { .. })
    ));
    assert_eq!(root(&tree, 0).unwrap(), empty_root());
    assert_eq!(MemoryTree::new().root(), empty_root());
    assert_eq!(inclusion_proof(&tree, 0, 0).unwrap_err().http_status(), 400);
    assert_eq!(root(&tree, 11).unwrap_err().http_status(), 500);
}

#[test]
fn verifiers_reject_garbage() {
    let (tree, leaves) = tree_of(9);
    let r = tree.root();
    let p = tree.inclusion_proof(3, 9).unwrap();
    assert!(verify_inclusion(&leaves[3], 3, 9, &p, &r).is_ok());
    // Wrong index / size / leaf / root / proof element.
    assert!(verify_inclusion(&leaves[3], 2, 9, &p, &r).is_err());
    // (Sizes 9 and 10 share the proof shape for index 3, as RFC 9162 allows; 17 does not.)
    assert!(verify_inclusion(&leaves[3], 3, 17, &p, &r).is_err());
    assert!(verify_inclusion(&leaves[3], 3, 4, &p, &r).is_err());
    assert!(verify_inclusion(&leaves[4], 3, 9, &p, &r).is_err());
    assert!(verify_inclusion(&leaves[3], 3, 9, &p, &leaves[0]).is_err());
    let mut bad = p.clone();
    bad[1][0] ^= 1;
    assert!(matches!(
        verify_inclusion(&leaves[3], 3, 9, &bad, &r),
        Err(LedgerError::RootMismatch)
    ));
    // Wrong lengths.
    assert!(verify_inclusion(&leaves[3], 3, 9, &p[..p.len() - 1], &r).is_err());
    let mut long = p.clone();
    long.push([0; 32]);
    assert!(verify_inclusion(&leaves[3], 3, 9, &long, &r).is_err());
    let short: Vec<Vec<u8>> = p.iter().map(|h| h[..31].to_vec()).collect();
    assert!(matches!(
        verify_inclusion(&leaves[3], 3, 9, &short, &r),
        Err(LedgerError::InvalidProof(_))
    ));
    assert!(verify_inclusion(&leaves[3][..16], 3, 9, &p, &r).is_err());
    let huge = vec![[0u8; 32]; 1000];
    assert!(verify_inclusion(&leaves[3], 3, 9, &huge, &r).is_err());
    assert!(verify_consistency(3, 9, &tree.root_at(3).unwrap(), &r, &huge).is_err());
    assert!(verify_inclusion(&leaves[0], u64::MAX - 1, u64::MAX, &huge[..64], &r).is_err());
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &r, &r, &huge[..64]).is_err());
    // Consistency tampering.
    let r5 = tree.root_at(5).unwrap();
    let c = tree.consistency_proof(5, 9).unwrap();
    assert!(verify_consistency(5, 9, &r5, &r, &c).is_ok());
    assert!(verify_consistency(5, 9, &r, &r5, &c).is_err());
    assert!(verify_consistency(4, 9, &r5, &r, &c).is_err());
    assert!(verify_consistency(5, 8, &r5, &r, &c).is_err());
    assert!(verify_consistency(5, 9, &r5, &r, &c[1..]).is_err());
    let no: [Hash; 0] = [];
    assert!(verify_consistency(5, 9, &r5, &r, &no).is_err());
    assert_eq!(
        verify_consistency(5, 9, &r, &r5, &c)
            .unwrap_err()
            .http_status(),
        422
    );
}
