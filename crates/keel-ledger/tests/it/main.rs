//! Integration tests of keel-ledger: conformance vectors, cross-checks, checkpoints, event leaves.

// Test helpers outside #[test] functions may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod checkpoint;
mod event;
mod props;
mod tree;
mod vectors;

use keel_ledger::{Hash, MemoryTree};

/// A tree over `n` deterministic leaves (`leaf_hash(i as u64 big-endian)`).
pub fn tree_of(n: u64) -> (MemoryTree, Vec<Hash>) {
    let mut tree = MemoryTree::with_capacity(n as usize);
    let mut leaves = Vec::with_capacity(n as usize);
    for i in 0..n {
        let leaf = keel_ledger::leaf_hash(&i.to_be_bytes());
        tree.append(leaf);
        leaves.push(leaf);
    }
    (tree, leaves)
}
