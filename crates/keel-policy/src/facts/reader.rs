//! Reading values in normalised text: numbers with units (percent, years, currencies,
//! counts), dates in English and Japanese styles, booleans, and sentence ends.

use chrono::NaiveDate;
use regex::Regex;

use super::model::*;
use crate::normalize::fold;

pub(super) const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

pub(super) fn value_regex() -> Result<Regex, String> {
    let month = "(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    let pct_ja = fold("パーセント");
    let pattern = format!(
        r"(?x)
        (?P<iso>(?P<y1>[0-9]{{4}})(?P<sep>[-/.])(?P<m1>[0-9]{{1,2}})[-/.](?P<d1>[0-9]{{1,2}}))
        |(?P<ja>(?P<y2>[0-9]{{4}})\ ?年\ ?(?P<m2>[0-9]{{1,2}})\ ?月\ ?(?P<d2>[0-9]{{1,2}})\ ?日)
        |(?P<en1>(?P<mn3>{month})\.?\ (?P<d3>[0-9]{{1,2}})(?:st|nd|rd|th)?,?\ (?P<y3>[0-9]{{4}}))
        |(?P<en2>(?P<d4>[0-9]{{1,2}})(?:st|nd|rd|th)?\ (?P<mn4>{month})\.?,?\ (?P<y4>[0-9]{{4}}))
        |(?:(?P<pre>[¥$€])\ ?)?(?P<num>[0-9]{{1,3}}(?:,[0-9]{{3}}){{1,5}}(?:\.[0-9]{{1,6}})?|[0-9]{{1,15}}(?:\.[0-9]{{1,6}})?)
         \ ?(?P<mult>万|億|千)?\ ?(?P<unit>%|percent(?-u:\b)|per\ cent(?-u:\b)|{pct_ja}|歳|才|years?(?-u:\b)|yrs?(?-u:\b)|円|yen(?-u:\b)|jpy(?-u:\b)|usd(?-u:\b)|dollars?(?-u:\b)|eur(?-u:\b)|euros?(?-u:\b))?"
    );
    regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| e.to_string())
}

/// A value read from the normalised text.
#[derive(Debug, Clone)]
pub(super) struct Tok {
    /// Whole token (normalised bytes).
    pub(super) start: usize,
    pub(super) end: usize,
    /// The part a correction replaces (normalised bytes).
    pub(super) rstart: usize,
    pub(super) rend: usize,
    pub(super) val: TokVal,
}

#[derive(Debug, Clone)]
pub(super) enum TokVal {
    Num {
        value: f64,
        unit: Option<Unit>,
        mult: f64,
        grouped: bool,
    },
    Date {
        date: NaiveDate,
        style: DateStyle,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum DateStyle {
    Iso(char, bool),
    Ja,
    MonthDayYear,
    DayMonthYear,
}

pub(super) fn month_of(name: &str) -> Option<u32> {
    let p = name.get(..3)?;
    MONTHS
        .iter()
        .position(|m| m.starts_with(p))
        .map(|i| i as u32 + 1)
}

pub(super) fn read_values(re: &Regex, text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for caps in re.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        if m.as_str().trim().is_empty() {
            continue;
        }
        // Not inside a word or a longer number.
        let before = text.get(..m.start()).and_then(|t| t.chars().next_back());
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == ',') {
            continue;
        }
        let g = |n: &str| caps.name(n).map(|x| x.as_str());
        let num = |n: &str| g(n).and_then(|s| s.parse::<u32>().ok());
        let date = |y: &str, mo: Option<u32>, d: &str| {
            NaiveDate::from_ymd_opt(num(y)? as i32, mo?, num(d)?)
        };
        let (tok_date, style) = if caps.name("iso").is_some() {
            let sep = g("sep").and_then(|s| s.chars().next()).unwrap_or('-');
            let padded = g("m1").is_some_and(|s| s.len() == 2);
            (date("y1", num("m1"), "d1"), DateStyle::Iso(sep, padded))
        } else if caps.name("ja").is_some() {
            (date("y2", num("m2"), "d2"), DateStyle::Ja)
        } else if caps.name("en1").is_some() {
            (
                date("y3", g("mn3").and_then(month_of), "d3"),
                DateStyle::MonthDayYear,
            )
        } else if caps.name("en2").is_some() {
            (
                date("y4", g("mn4").and_then(month_of), "d4"),
                DateStyle::DayMonthYear,
            )
        } else {
            (None, DateStyle::Ja)
        };
        if caps.name("iso").is_some()
            || caps.name("ja").is_some()
            || caps.name("en1").is_some()
            || caps.name("en2").is_some()
        {
            if let Some(d) = tok_date {
                out.push(Tok {
                    start: m.start(),
                    end: m.end(),
                    rstart: m.start(),
                    rend: m.end(),
                    val: TokVal::Date { date: d, style },
                });
            }
            continue;
        }
        let Some(n) = caps.name("num") else { continue };
        let grouped = n.as_str().contains(',');
        let Ok(value) = n.as_str().replace(',', "").parse::<f64>() else {
            continue;
        };
        let mult = match g("mult") {
            Some("万") => 1e4,
            Some("億") => 1e8,
            Some("千") => 1e3,
            _ => 1.0,
        };
        let unit_text = g("unit").map(|u| {
            if u.starts_with('%') || u.starts_with('p') || u.starts_with('ハ') {
                "%"
            } else {
                u.trim_end_matches('s')
            }
        });
        let unit = match (g("pre"), unit_text) {
            (_, Some("%")) => Some(Unit::Percent),
            (_, Some("歳" | "才" | "year" | "yr")) => Some(Unit::Years),
            (Some("¥"), _) | (_, Some("円" | "yen" | "jpy")) => {
                Some(Unit::Currency("JPY".into()))
            }
            (Some("$"), _) | (_, Some("usd" | "dollar")) => Some(Unit::Currency("USD".into())),
            (Some("€"), _) | (_, Some("eur" | "euro")) => Some(Unit::Currency("EUR".into())),
            _ => None,
        };
        // Trailing spaces the optional parts let in are not part of the token.
        let end = m.start() + m.as_str().trim_end().len();
        out.push(Tok {
            start: m.start(),
            end,
            rstart: n.start(),
            rend: caps.name("mult").map_or(n.end(), |x| x.end()),
            val: TokVal::Num {
                value: value * mult,
                unit,
                mult,
                grouped,
            },
        });
    }
    out
}

/// Sentence ends in the normalised text: `。！？!?` and newlines; `.` before a space or the end.
pub(super) fn is_sentence_end(text: &str, i: usize, c: char) -> bool {
    match c {
        '。' | '!' | '?' | '\n' => true,
        '.' => text
            .get(i + 1..)
            .and_then(|r| r.chars().next())
            .is_none_or(char::is_whitespace),
        _ => false,
    }
}
