//! Comparing a stated value with a fact and writing the correction in the style the text
//! used (grouping, full-width digits, date style).

use chrono::Datelike;

use super::model::*;
use super::reader::{DateStyle, Tok, TokVal};

/// Whether a token can state a value of `fact`'s type; returns the stated value.
pub(super) fn stated(tok: &Tok, fact: &FactValue) -> Option<FactValue> {
    match (&tok.val, fact) {
        (TokVal::Num { value, unit, .. }, FactValue::Number { unit: fu, .. }) => {
            let ok = match (unit, fu) {
                (Some(u), fu) => u == fu,
                (None, Unit::Count | Unit::Years) => true,
                (None, _) => false,
            };
            ok.then(|| FactValue::Number {
                value: *value,
                unit: fu.clone(),
            })
        }
        (TokVal::Date { date, .. }, FactValue::Date(_)) => Some(FactValue::Date(*date)),
        _ => None,
    }
}

pub(super) fn same(a: &FactValue, b: &FactValue) -> bool {
    match (a, b) {
        (FactValue::Number { value: x, unit: u }, FactValue::Number { value: y, unit: v }) => {
            u == v && (x - y).abs() <= 1e-9 * y.abs().max(1.0)
        }
        _ => a == b,
    }
}

pub(super) fn group_thousands(int: &str) -> String {
    let mut out = String::new();
    let n = int.len();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn fmt_number(v: f64, grouped: bool) -> String {
    let s = format!("{v}");
    if !grouped {
        return s;
    }
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", s.as_str()),
    };
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let mut out = format!("{sign}{}", group_thousands(int));
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

pub(super) fn to_full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap_or(c),
            '.' => '．',
            ',' => '，',
            _ => c,
        })
        .collect()
}

/// The replacement text for `tok`, written in the stated style, saying `current`.
pub(super) fn replacement(tok: &Tok, current: &FactValue, full_width: bool) -> Option<String> {
    let s = match (&tok.val, current) {
        (TokVal::Num { mult, grouped, .. }, FactValue::Number { value, .. }) => {
            fmt_number(value / mult, *grouped)
        }
        (TokVal::Date { style, .. }, FactValue::Date(d)) => match style {
            DateStyle::Iso(sep, padded) => {
                if *padded {
                    format!("{}{sep}{:02}{sep}{:02}", d.year(), d.month(), d.day())
                } else {
                    format!("{}{sep}{}{sep}{}", d.year(), d.month(), d.day())
                }
            }
            DateStyle::Ja => format!("{}年{}月{}日", d.year(), d.month(), d.day()),
            DateStyle::MonthDayYear => format!("{} {}, {}", d.format("%B"), d.day(), d.year()),
            DateStyle::DayMonthYear => format!("{} {} {}", d.day(), d.format("%B"), d.year()),
        },
        _ => return None,
    };
    Some(if full_width { to_full_width(&s) } else { s })
}
