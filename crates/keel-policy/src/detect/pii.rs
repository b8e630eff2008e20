//! PII recognizers: candidate regexes over the normalised text plus checksum and format
//! validators (Luhn, IBAN mod-97, My Number check digit, SSN ranges, IP address parsing).

use regex::{Regex, RegexSet};

/// The kinds of personal data the built-in recognizers find; also the keys of
/// `signals.<pii detector>` in CEL.
pub const PII_KINDS: [&str; 8] = [
    "email",
    "phone",
    "credit_card",
    "iban",
    "ip",
    "secret",
    "us_ssn",
    "jp_my_number",
];

/// A candidate pattern of one kind, with its validator. Patterns run over the folded text
/// (NFKD + lower case), so full-width digits and `＠` are already ASCII.
struct Spec {
    kind: usize,
    pattern: &'static str,
    validate: fn(&str) -> bool,
    /// Whether the value to report is capture group 1 (e.g. `password = <value>`).
    group: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        kind: 0,
        pattern: r"[a-z0-9._%+\-]{1,64}@(?:[a-z0-9](?:[a-z0-9\-]{0,30}[a-z0-9])?\.){1,4}[a-z]{2,24}",
        validate: valid_email,
        group: false,
    },
    // International: +CC then groups, 8..15 digits in all (E.164).
    Spec {
        kind: 1,
        pattern: r"\+[1-9][0-9]{0,3}(?:[ .\-]?\(?[0-9]{1,5}\)?){1,6}",
        validate: valid_intl_phone,
        group: false,
    },
    // Japanese domestic: 03-1234-5678, (03)1234-5678, 090-1234-5678, 0120-123-456, 09012345678.
    Spec {
        kind: 1,
        pattern: r"\(?0[0-9]{1,4}\)?[ \-]?[0-9]{1,4}[ \-]?[0-9]{3,4}",
        validate: valid_jp_phone,
        group: false,
    },
    // North American: (415) 555-0100, 415-555-0100, 415.555.0100.
    Spec {
        kind: 1,
        pattern: r"\(?[2-9][0-9]{2}\)?[ .\-]?[2-9][0-9]{2}[ .\-][0-9]{4}",
        validate: valid_nanp_phone,
        group: false,
    },
    Spec {
        kind: 2,
        pattern: r"[0-9](?:[ \-]?[0-9]){12,18}",
        validate: valid_card,
        group: false,
    },
    Spec {
        kind: 3,
        pattern: r"[a-z]{2}[0-9]{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,3})?",
        validate: valid_iban,
        group: false,
    },
    Spec {
        kind: 4,
        pattern: r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
        validate: valid_ipv4,
        group: false,
    },
    Spec {
        kind: 4,
        pattern: r"(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,6}(?::[0-9a-f]{1,4}){1,6}|(?:[0-9a-f]{1,4}:){1,7}:|::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4}",
        validate: valid_ipv6,
        group: false,
    },
    Spec {
        kind: 5,
        pattern: r"sk-(?:proj-|live-|test-)?[a-z0-9_\-]{20,100}|akia[0-9a-z]{16}|gh[pousr]_[a-z0-9]{36,40}|xox[baprs]-[a-z0-9\-]{10,80}|aiza[0-9a-z_\-]{35}|-----begin [a-z ]{0,20}private key-----",
        validate: always,
        group: false,
    },
    Spec {
        kind: 5,
        pattern: r#"(?:api[_\-]?key|secret|access[_\-]?token|auth[_\-]?token|password|passwd)["']?[ \t]{0,4}[:=][ \t]{0,4}["']?([a-z0-9_\-./+=!@#$%^&*]{8,100})"#,
        validate: always,
        group: true,
    },
    Spec {
        kind: 6,
        pattern: r"[0-9]{3}-[0-9]{2}-[0-9]{4}",
        validate: valid_ssn,
        group: false,
    },
    Spec {
        kind: 7,
        pattern: r"[0-9]{4}[ \-]?[0-9]{4}[ \-]?[0-9]{4}",
        validate: valid_my_number,
        group: false,
    },
];

/// The compiled recognizers of one policy (shared by all its PII detectors).
pub(crate) struct PiiRecognizers {
    set: RegexSet,
    regexes: Vec<Regex>,
}

/// One recognised value: kind index and span in the folded text.
pub(crate) struct PiiHit {
    pub kind: usize,
    pub start: usize,
    pub end: usize,
}

impl PiiRecognizers {
    pub fn new() -> Result<Self, String> {
        let patterns: Vec<&str> = SPECS.iter().map(|s| s.pattern).collect();
        let set = RegexSet::new(&patterns).map_err(|e| e.to_string())?;
        let regexes = patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PiiRecognizers { set, regexes })
    }

    /// The longest value any recognizer of the given kinds can match, in folded bytes.
    pub fn max_len(kinds: &[bool]) -> usize {
        SPECS
            .iter()
            .filter(|s| kinds.get(s.kind).copied().unwrap_or(false))
            .filter_map(|s| crate::detect::regex_max_len(s.pattern))
            .max()
            .unwrap_or(0)
    }

    /// Finds values of the enabled `kinds` in `text` (folded), non-overlapping: where two
    /// candidates overlap, the earlier (then longer) one wins.
    pub fn find(&self, text: &str, kinds: &[bool], out: &mut Vec<PiiHit>) {
        let first = out.len();
        let candidates = self.set.matches(text);
        for idx in candidates.iter() {
            let (Some(spec), Some(re)) = (SPECS.get(idx), self.regexes.get(idx)) else {
                continue;
            };
            if !kinds.get(spec.kind).copied().unwrap_or(false) {
                continue;
            }
            let mut pos = 0;
            while pos <= text.len() {
                let (start, end, whole_end) = if spec.group {
                    let Some(caps) = re.captures_at(text, pos) else {
                        break;
                    };
                    let (Some(whole), Some(value)) = (caps.get(0), caps.get(1)) else {
                        break;
                    };
                    (value.start(), value.end(), whole.end())
                } else {
                    let Some(m) = re.find_at(text, pos) else {
                        break;
                    };
                    (m.start(), m.end(), m.end())
                };
                let value = text.get(start..end).unwrap_or("");
                let numeric = matches!(spec.kind, 1 | 2 | 6 | 7);
                let ok = boundary_ok(text, start, end)
                    && !(numeric && digit_group_continues(text, start, end))
                    && (spec.validate)(value);
                if ok {
                    out.push(PiiHit {
                        kind: spec.kind,
                        start,
                        end,
                    });
                    pos = whole_end.max(pos + 1);
                } else {
                    // Retry one character later: a shorter valid value may start inside.
                    pos = next_char(text, start.max(pos));
                }
            }
        }
        let hits = &mut out[first..];
        hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut kept: Vec<PiiHit> = Vec::with_capacity(hits.len());
        for h in out.drain(first..) {
            if kept.last().is_some_and(|k| h.start < k.end) {
                continue;
            }
            kept.push(h);
        }
        out.extend(kept);
    }
}

fn next_char(text: &str, at: usize) -> usize {
    text.get(at..)
        .and_then(|r| r.chars().next())
        .map(|c| at + c.len_utf8())
        .unwrap_or(text.len() + 1)
}

/// A value must not be glued to letters or digits on either side (`x4111…`, `…1111a`).
fn boundary_ok(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let after = text.get(end..).and_then(|t| t.chars().next());
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    !glued(before) && !glued(after)
}

/// A digit group right before or after (`1234 [5678 9012] 3456`): the value is part of a
/// longer number and is not this kind.
fn digit_group_continues(text: &str, start: usize, end: usize) -> bool {
    let sep = |c: char| c == ' ' || c == '-';
    let mut before = text.get(..start).unwrap_or("").chars().rev();
    let mut after = text.get(end..).unwrap_or("").chars();
    let b = matches!((before.next(), before.next()), (Some(s), Some(d)) if sep(s) && d.is_ascii_digit());
    let a =
        matches!((after.next(), after.next()), (Some(s), Some(d)) if sep(s) && d.is_ascii_digit());
    a || b
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn always(_: &str) -> bool {
    true
}

fn valid_email(s: &str) -> bool {
    let Some((local, _)) = s.split_once('@') else {
        return false;
    };
    !local.starts_with('.') && !local.ends_with('.') && !local.contains("..")
}

fn valid_intl_phone(s: &str) -> bool {
    let n = digits(s).len();
    (8..=15).contains(&n) && !s.ends_with('(')
}

fn valid_jp_phone(s: &str) -> bool {
    let d = digits(s);
    let n = d.len();
    let separated = s.contains('-') || s.contains(' ') || s.contains('(');
    match (d.get(1), d.get(2)) {
        // Mobile, PHS/M2M, IP phones: 0[5789]0 + 8 digits.
        (Some(5 | 7 | 8 | 9), Some(0)) if n == 11 => true,
        // 0120 / 0800 free dial, 0570 navi dial: 10 or 11 digits.
        _ if s.starts_with("0120") || s.starts_with("0800") || s.starts_with("0570") => {
            n == 10 || n == 11
        }
        // Landlines: 10 digits; an unseparated run must look like a number, not an id.
        (Some(1..=9), _) => n == 10 && (separated || d.get(1).is_some_and(|&x| x != 0)),
        _ => false,
    }
}

fn valid_nanp_phone(s: &str) -> bool {
    digits(s).len() == 10
}

/// Luhn checksum over the digits.
pub(crate) fn luhn(d: &[u32]) -> bool {
    let mut sum = 0;
    for (i, &x) in d.iter().rev().enumerate() {
        let v = if i % 2 == 1 {
            let y = x * 2;
            if y > 9 {
                y - 9
            } else {
                y
            }
        } else {
            x
        };
        sum += v;
    }
    !d.is_empty() && sum % 10 == 0
}

fn valid_card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || !luhn(&d) {
        return false;
    }
    let prefix = |k: usize| d.iter().take(k).fold(0u32, |acc, x| acc * 10 + x);
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    let n = d.len();
    let visa = d.first() == Some(&4) && matches!(n, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16;
    let amex = (p2 == 34 || p2 == 37) && n == 15;
    let discover = (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3)) && n >= 16;
    let jcb = (3528..=3589).contains(&p4) && n >= 16;
    let diners = (p2 == 36 || p2 == 38 || (300..=305).contains(&p3)) && n >= 14;
    let unionpay = p2 == 62 && n >= 16;
    visa || mastercard || amex || discover || jcb || diners || unionpay
}

fn valid_iban(s: &str) -> bool {
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact.iter().skip(4).chain(compact.iter().take(4));
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn valid_ipv4(s: &str) -> bool {
    s.split('.')
        .all(|o| !o.is_empty() && (o == "0" || !o.starts_with('0')) && o.parse::<u8>().is_ok())
}

fn valid_ipv6(s: &str) -> bool {
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    groups >= 2 && s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn valid_ssn(s: &str) -> bool {
    let d = digits(s);
    let area = d.iter().take(3).fold(0, |a, x| a * 10 + x);
    let group = d.iter().skip(3).take(2).fold(0, |a, x| a * 10 + x);
    let serial = d.iter().skip(5).take(4).fold(0, |a, x| a * 10 + x);
    d.len() == 9 && area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Japanese My Number (個人番号): 11 digits and a check digit. With P(n) the n-th digit from
/// the right before the check digit and Q(n) = n + 1 for n ≤ 6, n − 5 for n ≥ 7, the check
/// digit is 11 − (Σ P(n)·Q(n) mod 11), or 0 when that remainder is 0 or 1.
pub(crate) fn valid_my_number(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 12 {
        return false;
    }
    let mut sum = 0;
    for n in 1..=11usize {
        let p = d.get(11 - n).copied().unwrap_or(0);
        let q = if n <= 6 { n + 1 } else { n - 5 } as u32;
        sum += p * q;
    }
    let r = sum % 11;
    let check = if r <= 1 { 0 } else { 11 - r };
    d.get(11) == Some(&check)
}
