//! Property tests against the independent `ct-merkle` crate: roots, inclusion and consistency
//! proofs must be byte-identical, and each side's verifier must accept the other's proofs.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use keel_ledger::{verify_consistency, verify_inclusion, Hash, MemoryTree};
use proptest::collection::vec;
use proptest::prelude::*;
use sha2_011::Sha256;

type CtTree = MemoryBackedTree<Sha256, Vec<u8>>;

fn flat(proof: &[Hash]) -> Vec<u8> {
    proof.concat()
}

fn ct_root(hash: &Hash, size: u64) -> RootHash<Sha256> {
    let digest = ct_merkle::digest::Output::<Sha256>::try_from(hash.as_slice()).unwrap();
    RootHash::new(digest, size)
}

fn chunks(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.chunks(32).map(<[u8]>::to_vec).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matches_ct_merkle(
        leaves in vec(vec(any::<u8>(), 0..24), 1..160),
        picks in vec((any::<u64>(), any::<u64>()), 160),
    ) {
        let mut ours = MemoryTree::new();
        let mut ct = CtTree::new();
        let mut old_roots: Vec<Hash> = Vec::new();
        for (i, data) in leaves.iter().enumerate() {
            ours.append_data(data);
            ct.push(data.clone());
            let size = (i + 1) as u64;
            let root = ours.root();
            let their_root = ct.root();
            prop_assert_eq!(root.as_slice(), their_root.as_bytes().as_slice());
            old_roots.push(root);

            // One inclusion and one consistency query at every size.
            let (a, b) = picks[i];
            let idx = a % size;
            let proof = ours.inclusion_proof(idx, size).unwrap();
            let theirs = ct.prove_inclusion(idx as usize);
            prop_assert_eq!(flat(&proof), theirs.as_bytes().to_vec());
            prop_assert!(their_root.verify_inclusion(data_at(&leaves, idx), idx, &InclusionProof::from_bytes(flat(&proof))).is_ok());
            prop_assert!(verify_inclusion(&ours.leaf(idx).unwrap(), idx, size, &chunks(theirs.as_bytes()), their_root.as_bytes()).is_ok());

            let m = b % size + 1;
            if m < size {
                let proof = ours.consistency_proof(m, size).unwrap();
                let theirs = ct.prove_consistency((size - m) as usize);
                prop_assert_eq!(flat(&proof), theirs.as_bytes().to_vec());
                let old = ct_root(&old_roots[m as usize - 1], m);
                let parsed = ConsistencyProof::<Sha256>::try_from_bytes(flat(&proof)).unwrap();
                prop_assert!(their_root.verify_consistency(&old, &parsed).is_ok());
                prop_assert!(verify_consistency(m, size, &old_roots[m as usize - 1], &root, &chunks(theirs.as_bytes())).is_ok());
            }
        }

        // At the final size: every index and every older size.
        let size = ours.size();
        for idx in 0..size {
            let proof = ours.inclusion_proof(idx, size).unwrap();
            prop_assert_eq!(flat(&proof), ct.prove_inclusion(idx as usize).as_bytes().to_vec());
        }
        for m in 1..size {
            let proof = ours.consistency_proof(m, size).unwrap();
            prop_assert_eq!(flat(&proof), ct.prove_consistency((size - m) as usize).as_bytes().to_vec());
        }
    }
}

fn data_at(leaves: &[Vec<u8>], idx: u64) -> &Vec<u8> {
    &leaves[idx as usize]
}
