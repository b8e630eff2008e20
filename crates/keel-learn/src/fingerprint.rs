//! Answer fingerprints and answer clusters: a 64-bit MinHash sketch of a reply's n-gram set and
//! a cluster id that is a pure function of it, so every replica puts a reply in the same cluster.
//!
//! The features are the learned monitors' ([`crate::features::hashes`]): NFKC + lowercase,
//! word 1–2-grams in spaced scripts, character 2–3-grams in CJK/kana runs, so Japanese replies
//! cluster by their characters, not by (absent) spaces.
//!
//! Layout of the 64 bits, most significant first: two 16-bit min-hashes (the *band*), then four
//! 8-bit min-hashes (b-bit minwise hashing). Each min-hash of two texts agrees with probability
//! equal to the Jaccard similarity `J` of their n-gram sets (plus `2^-b` by chance for the
//! truncated ones).
//!
//! The cluster id is the band: `"c" + 8 hex digits` of the top 32 bits. Two replies share a
//! cluster with probability ≈ `J²`: 0.81 for near-duplicates with `J = 0.9`, 0.25 at `J = 0.5`,
//! 0.01 for unrelated texts sharing a few common words (`J = 0.1`), and 2⁻³² by chance. The
//! trade-off: one min-hash (`J`) would merge unrelated replies that share stop words too often;
//! three or more (`J³`) would split rephrasings of one answer; several bands with a union of
//! matches would catch more near-duplicates but needs shared, mutable cluster state (merging on
//! the leader), which a request-path id must not depend on. A changed number in a short answer
//! ("8 %" → "10 %") usually moves it to another cluster, which is what a monitor wants: it is
//! a different answer.

use crate::features::{hashes, normalize};

/// Bytes of a reply read for its fingerprint.
pub const MAX_BYTES: usize = 8 * 1024;

/// Seeds of the six min-hash permutations (odd 64-bit constants).
const SEEDS: [u64; 6] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7345,
    0xa409_3822_299f_31d1,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6d,
];

fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A reply's 64-bit sketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// 16 lowercase hex digits.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Parses [`Fingerprint::hex`]'s form.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Fingerprint)
    }

    /// The answer cluster: `"c"` + the top 32 bits (the band of two 16-bit min-hashes) in hex.
    pub fn cluster(self) -> String {
        format!("c{:08x}", self.0 >> 32)
    }

    /// Estimated Jaccard similarity of the two replies' n-gram sets: the share of the six
    /// min-hashes that agree (the 8-bit ones corrected for chance agreement), in [0, 1].
    pub fn similarity(self, other: Fingerprint) -> f64 {
        let mut s = 0.0;
        for i in 0..2 {
            let sh = 48 - 16 * i;
            s += f64::from(u8::from(
                (self.0 >> sh) & 0xffff == (other.0 >> sh) & 0xffff,
            ));
        }
        for i in 0..4 {
            let sh = 24 - 8 * i;
            let agree = f64::from(u8::from((self.0 >> sh) & 0xff == (other.0 >> sh) & 0xff));
            s += ((agree - 1.0 / 256.0) / (1.0 - 1.0 / 256.0)).max(0.0);
        }
        s / 6.0
    }
}

/// The fingerprint of `text`'s first [`MAX_BYTES`], or `None` when it has no features (empty,
/// whitespace or punctuation only).
pub fn fingerprint(text: &str) -> Option<Fingerprint> {
    let norm = normalize(text, MAX_BYTES);
    let mut hs = Vec::with_capacity(norm.len() / 3 + 4);
    hashes(&norm, &mut hs);
    of_hashes(&hs)
}

/// The fingerprint of a set of feature hashes (duplicates do not matter).
pub fn of_hashes(hs: &[u64]) -> Option<Fingerprint> {
    if hs.is_empty() {
        return None;
    }
    let mut mins = [u64::MAX; 6];
    for &h in hs {
        for (m, seed) in mins.iter_mut().zip(SEEDS) {
            let v = mix(h ^ seed);
            if v < *m {
                *m = v;
            }
        }
    }
    let mut fp = 0u64;
    for m in &mins[..2] {
        fp = (fp << 16) | (m & 0xffff);
    }
    for m in &mins[2..] {
        fp = (fp << 8) | (m & 0xff);
    }
    Some(Fingerprint(fp))
}

/// `(answer_fingerprint, answer_cluster)` as recorded with an interaction.
pub fn answer_ids(text: &str) -> Option<(String, String)> {
    fingerprint(text).map(|f| (f.hex(), f.cluster()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(t: &str) -> String {
        fingerprint(t).unwrap().cluster()
    }

    /// Deterministic filler sentences: "w{a} w{b} …" over a seeded walk.
    fn sentence(seed: u64, words: usize) -> String {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..words)
            .map(|_| {
                x = mix(x);
                format!("w{}", x % 5000)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn deterministic_and_formatted() {
        let t = "The consumption tax rate is 8 percent.";
        let a = fingerprint(t).unwrap();
        assert_eq!(a, fingerprint(t).unwrap());
        assert_eq!(a.hex().len(), 16);
        assert!(a
            .hex()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(Fingerprint::from_hex(&a.hex()), Some(a));
        let c = a.cluster();
        assert!(c.starts_with('c') && c.len() == 9, "{c}");
        assert_eq!(Fingerprint::from_hex("xyz"), None);
        assert_eq!(fingerprint(""), None);
        assert_eq!(fingerprint("  !!! … "), None);
        assert_eq!(answer_ids(t), Some((a.hex(), c)));
    }

    #[test]
    fn same_text_same_cluster_whatever_the_case_width_or_spacing() {
        let base = "The consumption tax rate is 8 percent on all purchases.";
        for v in [
            "the consumption tax rate is 8 percent on all purchases",
            "THE  CONSUMPTION TAX RATE IS 8 PERCENT ON ALL PURCHASES!",
            "Ｔｈｅ consumption tax rate is ８ percent on all purchases.",
        ] {
            assert_eq!(fingerprint(v), fingerprint(base), "{v}");
        }
    }

    #[test]
    fn unrelated_texts_land_in_different_clusters() {
        let texts: Vec<String> = (0..300).map(|i| sentence(i, 40)).collect();
        let clusters: std::collections::BTreeSet<String> =
            texts.iter().map(|t| cluster(t)).collect();
        assert_eq!(clusters.len(), texts.len());
        assert_ne!(
            cluster("You can reset your password from the login page."),
            cluster("The basic plan costs 12 dollars a month.")
        );
    }

    #[test]
    fn near_duplicates_mostly_share_a_cluster() {
        // 200 texts of 80 words, each against a copy with one word replaced: J ≈ 0.95.
        let mut same = 0;
        for i in 0..200 {
            let t = sentence(1000 + i, 80);
            let mut words: Vec<&str> = t.split(' ').collect();
            words[40] = "different";
            let u = words.join(" ");
            let (a, b) = (fingerprint(&t).unwrap(), fingerprint(&u).unwrap());
            same += usize::from(a.cluster() == b.cluster());
            assert!(a.similarity(b) > 0.3, "{i}");
        }
        assert!(same >= 150, "{same}/200 near-duplicates shared a cluster");
    }

    #[test]
    fn japanese_replies_cluster_by_characters() {
        let a = "消費税率は現在も８％のままです。";
        assert_eq!(cluster(a), cluster("消費税率は現在も8%のままです"));
        assert_ne!(
            cluster(a),
            cluster("パスワードはログイン画面から再設定できます。")
        );
        assert_ne!(cluster(a), cluster("消費税率は10%に引き上げられました。"));
        let f = fingerprint(a).unwrap();
        assert!((f.similarity(f) - 1.0).abs() < 1e-12);
    }
}
