//! Text to hashed sparse features: NFKC + lowercase, script-aware n-grams (character 2–3-grams
//! inside CJK/kana runs, word 1–2-grams elsewhere), hashed into `2^bits` buckets with a sign bit.

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// One hashed feature: bucket index and signed value (±1/√n, so every text has unit norm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feature {
    pub index: u32,
    pub value: f32,
}

const SEED_WORD: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_BIGRAM: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEED_CHAR: u64 = 0x1656_67b1_9e37_79f9;
const SEED_CHAR2: u64 = 0x27d4_eb2f_1656_67c5;
const SEED_CHAR3: u64 = 0x85eb_ca77_c2b2_ae63;

/// MurmurHash3's 64-bit finaliser: spreads FNV's weak low bits over the word.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv_char(mut h: u64, c: char) -> u64 {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Whether `c` belongs to a script written without spaces (Han, kana, CJK symbols' letters):
/// such runs are cut into character n-grams instead of words.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F      // Hiragana
        | 0x30A0..=0x30FF    // Katakana (with the prolonged sound mark)
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x2FFFF  // CJK extensions B–F
    )
}

/// The text as features are computed from: cut to `max_bytes` (at a char boundary), NFKC
/// (skipped when the quick check says the text already is), lowercase.
pub fn normalize(text: &str, max_bytes: usize) -> String {
    let mut cut = text.len().min(max_bytes);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = &text[..cut];
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    if let Some(fast) = common_japanese(text) {
        return fast;
    }
    if is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        text.to_lowercase()
    } else {
        text.nfkc().collect::<String>().to_lowercase()
    }
}

/// NFKC + lowercase without the general algorithm, for text made only of characters whose
/// NFKC form is known and which never compose: ASCII, precomposed hiragana and katakana, CJK
/// unified ideographs, common CJK punctuation, the ideographic space and full-width ASCII
/// (mapped to ASCII). `None` for anything else (then the caller runs full NFKC).
fn common_japanese(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let u = c as u32;
        match u {
            0..=0x7F => out.push(c.to_ascii_lowercase()),
            0x3000 => out.push(' '),
            0x3001..=0x3002
            | 0x300C..=0x300F
            | 0x3041..=0x3096
            | 0x30A1..=0x30FA
            | 0x30FC
            | 0x4E00..=0x9FFF => out.push(c),
            0xFF01..=0xFF5E => out.push(char::from_u32(u - 0xFEE0)?.to_ascii_lowercase()),
            _ => return None,
        }
    }
    Some(out)
}

/// The raw 64-bit hashes of a normalised text's n-grams, in text order.
pub fn hashes(norm: &str, out: &mut Vec<u64>) {
    out.clear();
    // Word state.
    let mut word: u64 = FNV_OFFSET;
    let mut in_word = false;
    let mut prev_word: Option<u64> = None;
    // CJK run state: hashes of the previous two characters of the run.
    let mut c1: Option<u64> = None;
    let mut c2: Option<u64> = None;
    let mut run_len = 0usize;

    let end_word =
        |word: &mut u64, in_word: &mut bool, prev_word: &mut Option<u64>, out: &mut Vec<u64>| {
            if *in_word {
                let h = fmix(*word ^ SEED_WORD);
                out.push(h);
                if let Some(p) = *prev_word {
                    out.push(fmix(p.rotate_left(23) ^ h ^ SEED_BIGRAM));
                }
                *prev_word = Some(h);
                *word = FNV_OFFSET;
                *in_word = false;
            }
        };
    let end_run =
        |c1: &mut Option<u64>, c2: &mut Option<u64>, run_len: &mut usize, out: &mut Vec<u64>| {
            if *run_len == 1 {
                if let Some(h) = *c1 {
                    out.push(fmix(h ^ SEED_CHAR));
                }
            }
            *c1 = None;
            *c2 = None;
            *run_len = 0;
        };

    for c in norm.chars() {
        if is_cjk(c) {
            end_word(&mut word, &mut in_word, &mut prev_word, out);
            prev_word = None;
            let h = fmix(u64::from(c as u32) ^ SEED_CHAR);
            if let Some(p1) = c1 {
                out.push(fmix(p1.rotate_left(11) ^ h ^ SEED_CHAR2));
                if let Some(p2) = c2 {
                    out.push(fmix(
                        p2.rotate_left(29) ^ p1.rotate_left(11) ^ h ^ SEED_CHAR3,
                    ));
                }
            }
            c2 = c1;
            c1 = Some(h);
            run_len += 1;
        } else if c.is_alphanumeric() {
            if run_len > 0 {
                end_run(&mut c1, &mut c2, &mut run_len, out);
            }
            word = fnv_char(word, c);
            in_word = true;
        } else {
            if run_len > 0 {
                end_run(&mut c1, &mut c2, &mut run_len, out);
            }
            end_word(&mut word, &mut in_word, &mut prev_word, out);
        }
    }
    end_word(&mut word, &mut in_word, &mut prev_word, out);
    if run_len > 0 {
        end_run(&mut c1, &mut c2, &mut run_len, out);
    }
}

/// Maps hashes to `2^bits` buckets with a sign from the hash's top bit; values ±1/√n.
pub fn project(hashes: &[u64], bits: u32, out: &mut Vec<Feature>) {
    out.clear();
    if hashes.is_empty() {
        return;
    }
    let mask = (1u64 << bits) - 1;
    let v = 1.0 / (hashes.len() as f32).sqrt();
    out.extend(hashes.iter().map(|h| Feature {
        index: (h & mask) as u32,
        value: if h >> 63 == 1 { -v } else { v },
    }));
}

/// Features of `text`: [`normalize`], [`hashes`], [`project`].
pub fn features(text: &str, bits: u32, max_bytes: usize) -> Vec<Feature> {
    let norm = normalize(text, max_bytes);
    let mut hs = Vec::with_capacity(norm.len() / 2 + 4);
    hashes(&norm, &mut hs);
    let mut out = Vec::with_capacity(hs.len());
    project(&hs, bits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> usize {
        let mut v = Vec::new();
        hashes(&normalize(text, 1 << 20), &mut v);
        v.len()
    }

    #[test]
    fn english_words_and_bigrams() {
        // 3 words: 3 unigrams + 2 bigrams.
        assert_eq!(count("The tax rate"), 5);
        assert_eq!(count("  the, TAX   rate! "), 5);
        assert_eq!(count(""), 0);
        assert_eq!(count("!!! ..."), 0);
    }

    #[test]
    fn japanese_character_ngrams() {
        // 消費税率 = 4 chars: 3 bigrams + 2 trigrams.
        assert_eq!(count("消費税率"), 5);
        // One-character run: a unigram.
        assert_eq!(count("税"), 1);
        // Mixed: 税は (a bigram), "10" (a word), です (a bigram).
        assert_eq!(count("税は10%です"), 3);
    }

    #[test]
    fn nfkc_and_case_fold() {
        let a = features("ＴＡＸ ｒａｔｅ １０％", 18, 1 << 20);
        let b = features("tax rate 10%", 18, 1 << 20);
        assert_eq!(a, b);
        let k1 = features("ｶﾀｶﾅ", 18, 1 << 20);
        let k2 = features("カタカナ", 18, 1 << 20);
        assert_eq!(k1, k2);
    }

    #[test]
    fn fast_path_agrees_with_nfkc() {
        for t in [
            "消費税率は現在も８％のままです。",
            "ＡＢＣ　ｄｅｆ「カタカナ」ー、ひらがな。漢字１２３",
            "Ｈｅｌｌｏ！ Tax 税",
        ] {
            let fast = common_japanese(t).unwrap();
            let slow: String = t.nfkc().collect::<String>().to_lowercase();
            assert_eq!(fast, slow, "{t}");
        }
        assert_eq!(common_japanese("ｶﾀｶﾅ"), None);
        assert_eq!(common_japanese("e\u{301}"), None);
        assert_eq!(common_japanese("か\u{3099}"), None);
    }

    #[test]
    fn cut_at_char_boundary() {
        let s = "税".repeat(10);
        assert_eq!(normalize(&s, 4), "税");
        assert_eq!(normalize("abc", 0), "");
    }

    #[test]
    fn features_have_unit_norm_and_fit_the_table() {
        let f = features("the quick brown fox jumps over the lazy dog", 10, 1 << 20);
        let norm: f32 = f.iter().map(|x| x.value * x.value).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(f.iter().all(|x| x.index < 1024));
    }
}
