//! Identifiers: time-ordered, random, prefixed by what they name (`ix_…` for interactions).

use rand::RngCore;

use crate::clock::Clock;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new id `<prefix>_<13 chars of time><13 chars of randomness>` (Crockford base32, lowercase),
/// sortable by creation time.
pub fn new_id(prefix: &str, clock: &dyn Clock) -> String {
    let ms = clock.now_ms().max(0) as u64;
    let mut rnd = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut rnd);
    let r = u64::from_be_bytes(rnd);
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    push_base32(&mut out, ms, 13);
    push_base32(&mut out, r, 13);
    out
}

/// A reproducible id for simulated runs: the time part as in [`new_id`], the rest derived from
/// `material` (what the id names, e.g. a request body) and `occurrence` (how many identical
/// materials came before at the same millisecond), so concurrent arrival order cannot change it.
pub fn derived_id(prefix: &str, ms: i64, material: &[u8], occurrence: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(material);
    h.update(occurrence.to_be_bytes());
    let d = h.finalize();
    let mut r = [0u8; 8];
    r.copy_from_slice(&d[..8]);
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    push_base32(&mut out, ms.max(0) as u64, 13);
    push_base32(&mut out, u64::from_be_bytes(r), 13);
    out
}

fn push_base32(out: &mut String, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        let shift = i * 5;
        let idx = if shift >= 64 {
            0
        } else {
            ((value >> shift) & 31) as usize
        };
        out.push(ALPHABET[idx] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn ids_sort_by_time_and_differ() {
        let c = ManualClock::new(1_700_000_000_000);
        let a = new_id("ix", &c);
        c.advance_ms(1);
        let b = new_id("ix", &c);
        assert!(a.starts_with("ix_"));
        assert_eq!(a.len(), 3 + 26);
        assert!(a < b);
        assert_ne!(new_id("ix", &c), new_id("ix", &c));
    }

    #[test]
    fn derived_ids_repeat_for_the_same_material_and_occurrence() {
        let a = derived_id("ix", 5, b"body", 0);
        assert_eq!(a, derived_id("ix", 5, b"body", 0));
        assert_ne!(a, derived_id("ix", 5, b"body", 1));
        assert_ne!(a, derived_id("ix", 5, b"other", 0));
        assert_ne!(a, derived_id("ix", 6, b"body", 0));
        assert_eq!(a.len(), 3 + 26);
    }
}
