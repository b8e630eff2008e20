//! Text normalisation for matching: compatibility decomposition plus lower-casing, with a byte map
//! back to the original text so that every finding names a span of what the user really sent.
//!
//! Two strings have the same NFKC form exactly when they have the same NFKD form, so matching
//! under per-character NFKD (which, unlike composition, is local to each character) is matching
//! under NFKC equivalence, and lets us map each normalised byte to the original character that
//! produced it. Full-width Latin (`ＫＩＬＬ`), half-width katakana (`ｶﾞ`) and compatibility
//! ideographs fold onto their plain forms; letters are lower-cased with Unicode rules.

/// A normalised view of `original[base..]`.
pub(crate) struct Normalized<'a> {
    pub original: &'a str,
    /// Byte offset in `original` where this view starts.
    pub base: usize,
    /// The normalised text.
    pub text: String,
    /// For each byte of `text`, the offset in `original` of the character that produced it;
    /// `None` when the view is ASCII and the map is the identity (plus `base`).
    map: Option<Vec<u32>>,
}

impl<'a> Normalized<'a> {
    /// Normalises `original[base..]`; `base` must be a char boundary.
    pub fn new(original: &'a str, base: usize) -> Self {
        let slice = original.get(base..).unwrap_or("");
        if slice.is_ascii() {
            return Normalized {
                original,
                base,
                text: slice.to_ascii_lowercase(),
                map: None,
            };
        }
        let mut text = String::with_capacity(slice.len() + 16);
        let mut map: Vec<u32> = Vec::with_capacity(slice.len() + 16);
        for (i, c) in slice.char_indices() {
            let at = (base + i) as u32;
            push_folded(c, &mut |d| {
                let before = text.len();
                text.push(d);
                for _ in before..text.len() {
                    map.push(at);
                }
            });
        }
        Normalized {
            original,
            base,
            text,
            map: Some(map),
        }
    }

    /// The original byte offset where the character producing normalised byte `i` starts.
    fn orig_start(&self, i: usize) -> usize {
        match &self.map {
            None => self.base + i,
            Some(map) => map
                .get(i)
                .map(|&v| v as usize)
                .unwrap_or(self.original.len()),
        }
    }

    /// The original byte span covering normalised bytes `start..end` (widened to whole original
    /// characters).
    pub fn span(&self, start: usize, end: usize) -> (usize, usize) {
        let s = self.orig_start(start);
        if end <= start {
            return (s, s);
        }
        let last = self.orig_start(end - 1);
        let e = self
            .original
            .get(last..)
            .and_then(|rest| rest.chars().next())
            .map(|c| last + c.len_utf8())
            .unwrap_or(self.original.len());
        (s, e.max(s))
    }

    /// The normalised character just before normalised byte `i`, looking into the original text
    /// before `base` when `i` is 0.
    pub fn char_before(&self, i: usize) -> Option<char> {
        if i > 0 {
            return self.text.get(..i).and_then(|t| t.chars().next_back());
        }
        let prev = self.original.get(..self.base)?.chars().next_back()?;
        let mut last = None;
        push_folded(prev, &mut |d| last = Some(d));
        last
    }

    /// The normalised character at normalised byte `i`.
    pub fn char_at(&self, i: usize) -> Option<char> {
        self.text.get(i..).and_then(|t| t.chars().next())
    }
}

/// Folds one character: compatibility decomposition, then Unicode lower-casing.
fn push_folded(c: char, out: &mut impl FnMut(char)) {
    if c.is_ascii() {
        out(c.to_ascii_lowercase());
        return;
    }
    // CJK unified ideographs have no compatibility decomposition and no case: skip the tables.
    if ('\u{4E00}'..='\u{9FFF}').contains(&c) {
        out(c);
        return;
    }
    unicode_normalization::char::decompose_compatible(c, |d| {
        for l in d.to_lowercase() {
            out(l);
        }
    });
}

/// The folded form of a whole string (used for lexicon terms).
pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_folded(c, &mut |d| out.push(d));
    }
    out
}

/// Whether `c` belongs to a script written without spaces between words (Han, kana, Thai, …),
/// where lexicon terms match as substrings.
pub(crate) fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF   // Thai, Lao
        | 0x1000..=0x109F // Myanmar
        | 0x1780..=0x17FF // Khmer
        | 0x2E80..=0x2FDF // CJK radicals
        | 0x3005..=0x3007
        | 0x3040..=0x30FF // Hiragana, Katakana
        | 0x31F0..=0x31FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0xFF66..=0xFF9F
        | 0x20000..=0x3FFFF)
}

/// Whether `c` continues a word of a spaced script (so a lexicon term next to it is no match).
pub(crate) fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() && !is_unspaced(c)) || c == '_' || is_mark(c)
}

/// Combining marks: a match must never end right before one (it would cut a character).
pub(crate) fn is_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
}
