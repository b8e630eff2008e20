//! Proof verification exactly as in RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).
//!
//! Hashes are taken as byte slices so that callers can pass decoded input as-is: a root or leaf
//! hash of the wrong length simply never matches, and a proof element that is not 32 bytes is
//! rejected with [`LedgerError::InvalidProof`].

use crate::hash::{node_hash, Hash, HASH_LEN};
use crate::LedgerError;

/// The longest proof any tree of at most 2^64 leaves can have.
const MAX_PROOF_LEN: usize = 64;

fn proof_hashes<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, LedgerError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(LedgerError::InvalidProof("proof has more than 64 hashes"));
    }
    proof
        .iter()
        .map(|p| {
            Hash::try_from(p.as_ref())
                .map_err(|_| LedgerError::InvalidProof("proof hash is not 32 bytes"))
        })
        .collect()
}

fn to_hash(bytes: &[u8]) -> Option<Hash> {
    if bytes.len() == HASH_LEN {
        Hash::try_from(bytes).ok()
    } else {
        None
    }
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
///
/// Errors: [`LedgerError::IndexOutOfRange`] if `index >= size`; [`LedgerError::InvalidProof`] for
/// proofs of the wrong length or with malformed hashes; [`LedgerError::RootMismatch`] when the
/// recomputed root differs.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), LedgerError> {
    if index >= size {
        return Err(LedgerError::IndexOutOfRange { index, size });
    }
    let proof = proof_hashes(proof)?;
    let Some(mut r) = to_hash(leaf_hash) else {
        return Err(LedgerError::RootMismatch);
    };
    let mut fnode = index;
    let mut snode = size - 1;
    for p in &proof {
        if snode == 0 {
            return Err(LedgerError::InvalidProof("proof is too long"));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(LedgerError::InvalidProof("proof is too short"));
    }
    if r.as_slice() != root {
        return Err(LedgerError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves
/// with root `root1` (RFC 9162 §2.1.4.2).
///
/// `size1 == 0` is always rejected ([`LedgerError::InvalidRange`]): a consistency proof from the
/// empty tree proves nothing. `size1 > size2` is rejected likewise. `size1 == size2` requires an
/// empty proof and equal roots (compared as opaque bytes). Otherwise errors are
/// [`LedgerError::InvalidProof`] (wrong length, malformed hashes) or [`LedgerError::RootMismatch`].
pub fn verify_consistency<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[P],
) -> Result<(), LedgerError> {
    if size1 == 0 {
        return Err(LedgerError::InvalidRange {
            from: size1,
            to: size2,
            reason: "consistency proofs from the empty tree are not accepted",
        });
    }
    if size1 > size2 {
        return Err(LedgerError::InvalidRange {
            from: size1,
            to: size2,
            reason: "first size is larger than second size",
        });
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(LedgerError::InvalidProof(
                "proof between equal sizes must be empty",
            ));
        }
        if root1 != root2 {
            return Err(LedgerError::RootMismatch);
        }
        return Ok(());
    }
    let mut path = proof_hashes(proof)?;
    // Step 1: an empty path never proves growth.
    if path.is_empty() {
        return Err(LedgerError::InvalidProof("empty proof for different sizes"));
    }
    // Step 2: if size1 is a power of two, the old root is itself the first node of the path.
    if size1.is_power_of_two() {
        let Some(first) = to_hash(root1) else {
            return Err(LedgerError::RootMismatch);
        };
        path.insert(0, first);
    }
    // Step 3, 4.
    let mut fnode = size1 - 1;
    let mut snode = size2 - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5, 6.
    let mut iter = path.iter();
    let Some(&first) = iter.next() else {
        return Err(LedgerError::InvalidProof("empty proof for different sizes"));
    };
    let mut fr = first;
    let mut sr = first;
    for c in iter {
        if snode == 0 {
            return Err(LedgerError::InvalidProof("proof is too long"));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    if snode != 0 {
        return Err(LedgerError::InvalidProof("proof is too short"));
    }
    if fr.as_slice() != root1 || sr.as_slice() != root2 {
        return Err(LedgerError::RootMismatch);
    }
    Ok(())
}
