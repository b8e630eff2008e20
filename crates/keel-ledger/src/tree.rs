//! Storage-friendly Merkle tree: perfect-subtree nodes addressed by (level, index), O(log n) roots
//! and proofs from any [`NodeReader`], append steps, a [`Frontier`] and the in-memory [`MemoryTree`].
//!
//! Node `(level, index)` is the RFC 6962 hash of the perfect subtree over leaves
//! `[index << level, (index + 1) << level)`; level 0 holds the leaf hashes. A tree of size `n`
//! has exactly the nodes whose range ends at or before `n`, and nodes never change once written,
//! so a store can keep them in an append-only table keyed by `(level, index)`.

use crate::hash::{empty_root, node_hash, Hash};
use crate::LedgerError;

/// Read access to persisted perfect-subtree nodes.
///
/// Implementations return [`LedgerError::MissingNode`] (or [`LedgerError::Storage`]) when the node
/// is not available. The functions in this module only ask for nodes that exist in a tree of the
/// size they were given, so a correct store always has them.
pub trait NodeReader {
    /// The hash of the perfect subtree at `level` (0 = leaves) and `index` within that level.
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError>;
}

impl<R: NodeReader + ?Sized> NodeReader for &R {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        (**self).node(level, index)
    }
}

/// A perfect-subtree node to persist: its address and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    /// Level: 0 for leaves, `l` for a subtree of `2^l` leaves.
    pub level: u32,
    /// Index within the level: the subtree covers leaves `[index << level, (index + 1) << level)`.
    pub index: u64,
    /// The subtree's Merkle hash.
    pub hash: Hash,
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Hash of the RFC 6962 subtree over leaves `[start, end)`, where `start` is a multiple of the
/// largest power of two not above `end - start` (true for every subtree appearing in RFC 6962
/// proofs). Reads one node per set bit of `end - start`.
fn range_hash<R: NodeReader + ?Sized>(
    reader: &R,
    start: u64,
    end: u64,
) -> Result<Hash, LedgerError> {
    if end <= start {
        return Err(LedgerError::InvalidRange {
            from: start,
            to: end,
            reason: "empty subtree range",
        });
    }
    // Collect the perfect pieces left to right (at most 64), then fold right to left.
    let mut pieces: [Hash; 64] = [[0u8; 32]; 64];
    let mut count = 0usize;
    let mut offset = start;
    let mut remaining = end - start;
    while remaining > 0 {
        let level = 63 - remaining.leading_zeros();
        let width = 1u64 << level;
        if offset & (width - 1) != 0 {
            return Err(LedgerError::InvalidRange {
                from: start,
                to: end,
                reason: "range is not an aligned subtree",
            });
        }
        if let Some(slot) = pieces.get_mut(count) {
            *slot = reader.node(level, offset >> level)?;
        }
        count += 1;
        offset += width;
        remaining -= width;
    }
    let mut pieces = pieces.iter().take(count).rev();
    let mut acc = pieces.next().copied().unwrap_or_else(empty_root);
    for left in pieces {
        acc = node_hash(left, &acc);
    }
    Ok(acc)
}

/// Merkle tree hash (root) of the first `size` leaves. `size == 0` gives [`empty_root`].
///
/// Reads one node per set bit of `size` (at most 64).
pub fn root<R: NodeReader + ?Sized>(reader: &R, size: u64) -> Result<Hash, LedgerError> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(reader, 0, size)
}

/// RFC 6962 audit path (RFC 9162 inclusion proof) of leaf `index` in the tree of `size` leaves,
/// ordered from the leaf's sibling up to the root's child, as [`crate::verify_inclusion`] expects.
///
/// Needs at most about `2 log2(size)` node reads.
pub fn inclusion_proof<R: NodeReader + ?Sized>(
    reader: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if index >= size {
        return Err(LedgerError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::with_capacity(64);
    let (mut start, mut end) = (0u64, size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index - start < k {
            proof.push(range_hash(reader, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(reader, start, start + k)?);
            start += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// RFC 6962 consistency proof between the trees of sizes `from` and `to` (RFC 9162 §2.1.4.1).
///
/// `from == to` gives an empty proof. `from == 0` and `from > to` are rejected with
/// [`LedgerError::InvalidRange`] (a proof from the empty tree proves nothing and no verifier
/// accepts one). Needs at most about `2 log2(to)` node reads.
pub fn consistency_proof<R: NodeReader + ?Sized>(
    reader: &R,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if from == 0 {
        return Err(LedgerError::InvalidRange {
            from,
            to,
            reason: "consistency proofs from the empty tree are not defined",
        });
    }
    if from > to {
        return Err(LedgerError::InvalidRange {
            from,
            to,
            reason: "first size is larger than second size",
        });
    }
    let mut proof = Vec::with_capacity(64);
    let (mut start, mut end) = (0u64, to);
    let mut whole_old_tree = true;
    loop {
        let n = end - start;
        let m = from - start;
        if m == n {
            if !whole_old_tree {
                proof.push(range_hash(reader, start, end)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            proof.push(range_hash(reader, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(reader, start, start + k)?);
            start += k;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// One append step: the nodes to persist when `leaf` becomes leaf number `size` (0-based) of a
/// tree that currently has `size` leaves.
///
/// Returns the leaf node `(0, size, leaf)` followed by every perfect subtree the new leaf
/// completes, lowest level first. Reads one existing node (a left sibling) per completed subtree.
/// To append many leaves without re-reading, use a [`Frontier`].
pub fn append<R: NodeReader + ?Sized>(
    reader: &R,
    size: u64,
    leaf: Hash,
) -> Result<Vec<Node>, LedgerError> {
    let mut nodes = Vec::with_capacity(1 + size.trailing_ones() as usize);
    let mut level = 0u32;
    let mut index = size;
    let mut hash = leaf;
    nodes.push(Node { level, index, hash });
    while index & 1 == 1 {
        let left = reader.node(level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        nodes.push(Node { level, index, hash });
    }
    Ok(nodes)
}

/// The right edge of a tree (the perfect subtrees whose sizes are the set bits of the size,
/// a.k.a. a compact range): enough to append leaves and compute the root without reading storage.
///
/// Load it once with [`Frontier::load`] (O(log n) reads), then [`Frontier::push`] each new leaf
/// and persist the nodes it returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)` of the right-edge perfect subtrees, highest level first.
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads the frontier of the tree of `size` leaves from storage (one read per set bit).
    pub fn load<R: NodeReader + ?Sized>(reader: &R, size: u64) -> Result<Self, LedgerError> {
        let mut edge = Vec::with_capacity(64);
        let mut offset = 0u64;
        for level in (0..64u32).rev() {
            let width = 1u64 << level;
            if size & width != 0 {
                edge.push((level, reader.node(level, offset >> level)?));
                offset += width;
            }
        }
        Ok(Self { size, edge })
    }

    /// Number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash, calling `sink` with the leaf node and then every completed subtree.
    /// Returns the new leaf's index.
    pub fn push_with(&mut self, leaf: Hash, mut sink: impl FnMut(Node)) -> u64 {
        let leaf_index = self.size;
        let mut level = 0u32;
        let mut index = leaf_index;
        let mut hash = leaf;
        sink(Node { level, index, hash });
        while let Some(&(top_level, left)) = self.edge.last() {
            if top_level != level {
                break;
            }
            self.edge.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            sink(Node { level, index, hash });
        }
        self.edge.push((level, hash));
        self.size += 1;
        leaf_index
    }

    /// Appends a leaf hash and returns the nodes to persist (see [`append`]).
    pub fn push(&mut self, leaf: Hash) -> Vec<Node> {
        let mut nodes = Vec::with_capacity(2);
        self.push_with(leaf, |n| nodes.push(n));
        nodes
    }

    /// Root of the tree (no storage reads).
    pub fn root(&self) -> Hash {
        let mut it = self.edge.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Root of a whole list of leaf hashes in one pass, with O(log n) memory (for full re-verification).
pub fn root_from_leaves<I: IntoIterator<Item = Hash>>(leaves: I) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push_with(leaf, |_| {});
    }
    frontier.root()
}

/// An in-memory tree keeping every perfect-subtree node; implements [`NodeReader`].
///
/// Used by tests, benchmarks and full re-verification. Proofs and roots for any past size are
/// served through the same functions a store uses.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is node `(l, i)`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree with room for `leaves` leaves without reallocating.
    pub fn with_capacity(leaves: usize) -> Self {
        let mut levels = Vec::new();
        let mut n = leaves;
        while n > 0 {
            levels.push(Vec::with_capacity(n));
            n /= 2;
        }
        Self { levels }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Appends a leaf hash and returns its index.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut level = 0usize;
        let mut hash = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                break;
            };
            row.push(hash);
            let len = row.len();
            if len % 2 == 1 {
                break;
            }
            match (row.get(len - 2), row.get(len - 1)) {
                (Some(l), Some(r)) => hash = node_hash(l, r),
                _ => break,
            }
            level += 1;
        }
        index
    }

    /// Appends the leaf hash of `data` (`SHA-256(0x00 || data)`) and returns its index.
    pub fn append_data(&mut self, data: &[u8]) -> u64 {
        self.append(crate::hash::leaf_hash(data))
    }

    /// Leaf hash at `index`, if present.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// Current root.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// Root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        self.check_size(size)?;
        root(self, size)
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.check_size(size)?;
        inclusion_proof(self, index, size)
    }

    /// Consistency proof from size `from` to size `to`.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        self.check_size(to)?;
        consistency_proof(self, from, to)
    }

    /// The frontier at the current size (no hashing, O(log n) copies).
    pub fn frontier(&self) -> Result<Frontier, LedgerError> {
        Frontier::load(self, self.size())
    }

    fn check_size(&self, size: u64) -> Result<(), LedgerError> {
        if size > self.size() {
            return Err(LedgerError::SizeBeyondTree {
                requested: size,
                size: self.size(),
            });
        }
        Ok(())
    }
}

impl NodeReader for MemoryTree {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        usize::try_from(level)
            .ok()
            .and_then(|l| self.levels.get(l))
            .and_then(|row| row.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(LedgerError::MissingNode { level, index })
    }
}
