//! Shared test helpers: the LCG stream generator that bench/make_golden.py mirrors bit for bit.
#![allow(dead_code, clippy::unwrap_used)]

use keel_drift::Detector;

/// Knuth's MMIX LCG; a value is the top 53 bits of the state scaled to [0, 1).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 * (1.0 / 9007199254740992.0)
    }
}

pub fn bernoulli_step(seed: u64, n: usize, change: usize, p0: f64, p1: f64) -> Vec<f64> {
    let mut g = Lcg(seed);
    (0..n)
        .map(|i| {
            let p = if i < change { p0 } else { p1 };
            if g.next_f64() < p {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Irwin–Hall(12) − 6 (≈ standard normal), plus `shift` from index `change` on.
pub fn gauss_step(seed: u64, n: usize, change: usize, shift: f64) -> Vec<f64> {
    let mut g = Lcg(seed);
    (0..n)
        .map(|i| {
            let mut acc = 0.0;
            for _ in 0..12 {
                acc += g.next_f64();
            }
            acc -= 6.0;
            acc + if i >= change { shift } else { 0.0 }
        })
        .collect()
}

/// Indices at which `d` raised a detection on `xs`.
pub fn detections(d: &mut dyn Detector, xs: &[f64]) -> Vec<usize> {
    xs.iter()
        .enumerate()
        .filter_map(|(i, &x)| d.update(x).unwrap().then_some(i))
        .collect()
}
