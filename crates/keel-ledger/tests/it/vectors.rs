//! Every transparency-dev/merkle conformance vector (inclusion and consistency, `wantErr` cases
//! and the `additional` folders): each must be accepted or rejected exactly as the file says.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keel_ledger::{verify_consistency, verify_inclusion, MemoryTree};
use serde::Deserialize;

/// The vendored vectors (`tests/data/merkle`, see its README for source and licence).
fn testdata_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/merkle"));
    assert!(
        dir.is_dir(),
        "Merkle conformance vectors not found at {}: refusing to skip",
        dir.display()
    );
    dir
}

/// All `.json` files under `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The case files of `kind` (inclusion or consistency), asserting every sub-folder has some.
fn cases(kind: &str) -> Vec<PathBuf> {
    let root = testdata_dir().join(kind);
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    assert!(!folders.is_empty(), "no case folders in {}", root.display());
    assert!(
        folders.iter().any(|f| f.ends_with("additional")),
        "{kind}/additional is missing"
    );
    let mut all = Vec::new();
    for folder in folders {
        let files = json_files(&folder);
        assert!(!files.is_empty(), "no .json cases in {}", folder.display());
        all.extend(files);
    }
    all
}

fn b64(text: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("bad base64 {text:?} in test data: {e}"))
}

fn b64_list(list: &Option<Vec<String>>) -> Vec<Vec<u8>> {
    list.iter().flatten().map(|s| b64(s)).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The leaves of transparency-dev's reference tree, from which its happy-path vectors are made.
fn reference_tree() -> MemoryTree {
    let leaves: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let mut tree = MemoryTree::new();
    for leaf in leaves {
        tree.append_data(leaf);
    }
    tree
}

/// Checks one verification result against the case's `wantErr`.
fn check<E: std::fmt::Debug>(path: &Path, desc: &str, want_err: bool, got: Result<(), E>) {
    assert_eq!(
        got.is_err(),
        want_err,
        "{} ({desc}): want_err={want_err}, got {got:?}",
        path.display()
    );
}

#[test]
fn every_inclusion_vector() {
    let files = cases("inclusion");
    let reference = reference_tree();
    let (mut rejected, mut generated) = (0, 0);
    for path in &files {
        let case: InclusionCase = load(path);
        let proof = b64_list(&case.proof);
        let (leaf, root) = (b64(&case.leaf_hash), b64(&case.root));
        let got = verify_inclusion(&leaf, case.leaf_idx, case.tree_size, &proof, &root);
        check(path, &case.desc, case.want_err, got);
        rejected += usize::from(case.want_err);
        // Happy paths from the reference tree: our generator must produce the same proof.
        if !case.want_err && case.tree_size <= reference.size() {
            let ours = reference
                .inclusion_proof(case.leaf_idx, case.tree_size)
                .unwrap();
            if reference.root_at(case.tree_size).unwrap().as_slice() == root {
                let ours: Vec<Vec<u8>> = ours.iter().map(|h| h.to_vec()).collect();
                assert_eq!(ours, proof, "{}: generated proof differs", path.display());
                generated += 1;
            }
        }
    }
    assert!(files.len() >= 90, "only {} inclusion vectors", files.len());
    assert!(
        rejected > 0 && generated > 0,
        "rejected {rejected}, generated {generated}"
    );
}

#[test]
fn every_consistency_vector() {
    let files = cases("consistency");
    let reference = reference_tree();
    let (mut rejected, mut generated) = (0, 0);
    for path in &files {
        let case: ConsistencyCase = load(path);
        let proof = b64_list(&case.proof);
        let (root1, root2) = (b64(&case.root1), b64(&case.root2));
        let got = verify_consistency(case.size1, case.size2, &root1, &root2, &proof);
        check(path, &case.desc, case.want_err, got);
        rejected += usize::from(case.want_err);
        if !case.want_err
            && case.size2 <= reference.size()
            && reference.root_at(case.size2).unwrap().as_slice() == root2
        {
            let ours = reference.consistency_proof(case.size1, case.size2).unwrap();
            let ours: Vec<Vec<u8>> = ours.iter().map(|h| h.to_vec()).collect();
            assert_eq!(ours, proof, "{}: generated proof differs", path.display());
            generated += 1;
        }
    }
    assert!(
        files.len() >= 90,
        "only {} consistency vectors",
        files.len()
    );
    assert!(
        rejected > 0 && generated > 0,
        "rejected {rejected}, generated {generated}"
    );
}

#[test]
fn size_zero_consistency_is_rejected_even_if_roots_match() {
    let empty = keel_ledger::empty_root();
    let none: [[u8; 32]; 0] = [];
    assert!(verify_consistency(0, 0, &empty, &empty, &none).is_err());
    assert!(verify_consistency(0, 1, &empty, &empty, &[empty]).is_err());
}
