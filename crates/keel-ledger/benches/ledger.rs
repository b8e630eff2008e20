//! In-memory ledger benchmark (plain `Instant`, no harness): appends/s for 1M leaves, mean
//! inclusion/consistency proof generation and verification, and a verify-all pass over 1M event
//! leaves (re-hash every leaf, recompute the root). Run: `cargo bench -p keel-ledger`.

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use keel_ledger::{
    payload_commitment, root_from_leaves, verify_consistency, verify_inclusion, EventLeaf, Hash,
    MemoryTree,
};

const N: u64 = 1_000_000;
const QUERIES: u64 = 100_000;

/// A deterministic pseudo-random sequence (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn event(i: u64) -> EventLeaf {
    let payload = format!(r#"{{"messages":[{{"role":"user","content":"question {i}"}}]}}"#);
    EventLeaf {
        seq: i + 1,
        ledger_index: i,
        at_unix_ms: 1_700_000_000_000 + i as i64,
        kind: "Interaction".to_owned(),
        actor: "key:bench".to_owned(),
        tenant: "acme".to_owned(),
        payload_hash: payload_commitment(&i.to_le_bytes(), payload.as_bytes()),
    }
}

fn per_op(d: Duration, n: u64) -> String {
    format!("{:.2} µs/op", d.as_secs_f64() * 1e6 / n as f64)
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("keel-ledger in-memory benchmark ({N} leaves)");

    // Leaf hashes are prepared first so that the append figure is the tree alone.
    let t = Instant::now();
    let events: Vec<EventLeaf> = (0..N).map(event).collect();
    let leaves: Vec<Hash> = events.iter().map(EventLeaf::leaf_hash).collect();
    let prep = t.elapsed();
    println!(
        "  build + hash {N} event leaves:    {:>8.3} s  ({:.0} leaves/s)",
        prep.as_secs_f64(),
        N as f64 / prep.as_secs_f64()
    );

    let t = Instant::now();
    let mut tree = MemoryTree::new();
    for leaf in &leaves {
        tree.append(*leaf);
    }
    let append = t.elapsed();
    println!(
        "  append {N} leaf hashes:          {:>8.3} s  ({:.0} appends/s)",
        append.as_secs_f64(),
        N as f64 / append.as_secs_f64()
    );
    let root = tree.root();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let queries: Vec<(u64, u64)> = (0..QUERIES)
        .map(|_| {
            let size = rng.below(N) + 1;
            (rng.below(size), size)
        })
        .collect();

    let t = Instant::now();
    let mut proofs = Vec::with_capacity(queries.len());
    for &(index, size) in &queries {
        proofs.push(tree.inclusion_proof(index, size)?);
    }
    println!(
        "  inclusion proof (random index, size): {}",
        per_op(t.elapsed(), QUERIES)
    );
    let roots: Vec<Hash> = queries
        .iter()
        .map(|&(_, size)| tree.root_at(size))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for (((index, size), proof), r) in queries.iter().zip(&proofs).zip(&roots) {
        verify_inclusion(&leaves[*index as usize], *index, *size, proof, r)?;
    }
    println!(
        "  inclusion verify:                      {}",
        per_op(t.elapsed(), QUERIES)
    );

    let t = Instant::now();
    let mut cproofs = Vec::with_capacity(queries.len());
    for &(index, size) in &queries {
        cproofs.push(tree.consistency_proof(index + 1, N)?);
        black_box(size);
    }
    println!(
        "  consistency proof (random from, 1M):   {}",
        per_op(t.elapsed(), QUERIES)
    );
    let old_roots: Vec<Hash> = queries
        .iter()
        .map(|&(index, _)| tree.root_at(index + 1))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for (((index, _), proof), old) in queries.iter().zip(&cproofs).zip(&old_roots) {
        verify_consistency(index + 1, N, old, &root, proof)?;
    }
    println!(
        "  consistency verify:                    {}",
        per_op(t.elapsed(), QUERIES)
    );

    let t = Instant::now();
    for &(_, size) in &queries {
        black_box(tree.root_at(size)?);
    }
    println!(
        "  root at a past size:                   {}",
        per_op(t.elapsed(), QUERIES)
    );

    // Verify-all as `keel audit verify` does it: re-encode and re-hash every event, recompute
    // the root, compare with the checkpoint root.
    let t = Instant::now();
    let recomputed = root_from_leaves(events.iter().map(EventLeaf::leaf_hash));
    let verify_all = t.elapsed();
    if recomputed != root {
        return Err("verify-all root mismatch".into());
    }
    println!(
        "  verify-all {N} events (re-hash leaves + root): {:.3} s",
        verify_all.as_secs_f64()
    );
    let t = Instant::now();
    black_box(root_from_leaves(leaves.iter().copied()));
    println!(
        "  recompute root from {N} leaf hashes:          {:.3} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
