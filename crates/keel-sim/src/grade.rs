//! Grading: every reply the simulated client received, against the truth at that simulated time.
//!
//! `bad` = it states something a change in force marks as wrong for its (topic, sub-topic,
//! locale, jurisdiction); `withheld` = blocked or escalated (counted apart; collateral when the
//! model's answer was right); `good` otherwise. A rewrite or correction that removes the wrong
//! statement makes a reply good; a notice appended next to it does not.

use serde::Serialize;

use crate::scenario::{segment, Change, Scenario};

/// The grade of one received reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Good,
    Bad,
    Withheld,
}

/// Where and when a reply was given.
#[derive(Debug, Clone, Copy)]
pub struct Slice<'a> {
    pub topic: &'a str,
    pub subtopic: &'a str,
    pub locale: &'a str,
    pub jurisdiction: &'a str,
    pub at_ms: i64,
}

fn norm(s: &str) -> String {
    s.to_lowercase()
}

/// Changes in force at the slice's time whose scope covers it.
pub fn in_force<'a>(s: &'a Scenario, at: &Slice<'_>) -> impl Iterator<Item = (usize, &'a Change)> {
    let (t, st, l, j, ms) = (
        at.topic.to_string(),
        at.subtopic.to_string(),
        at.locale.to_string(),
        at.jurisdiction.to_string(),
        at.at_ms,
    );
    s.changes.iter().enumerate().filter(move |(_, c)| {
        c.effective_ms <= ms && c.scope.covers(&segment(&t, Some(&st), &l, &j))
    })
}

/// The changes whose now-wrong statement `text` contains, at the slice's time.
pub fn wrong_by(s: &Scenario, at: &Slice<'_>, text: &str) -> Vec<usize> {
    let text = norm(text);
    in_force(s, at)
        .filter(|(_, c)| {
            c.wrong
                .iter()
                .any(|w| !w.is_empty() && text.contains(&norm(w)))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Grades a received reply.
pub fn grade(s: &Scenario, at: &Slice<'_>, text: &str, withheld: bool) -> Grade {
    if withheld {
        Grade::Withheld
    } else if wrong_by(s, at, text).is_empty() {
        Grade::Good
    } else {
        Grade::Bad
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(s: &Scenario, at: Slice<'_>, text: &str, withheld: bool, want: Grade) {
        assert_eq!(grade(s, &at, text, withheld), want, "{at:?} {text}");
    }

    #[test]
    fn grades_follow_the_truth_at_that_time() {
        let s = Scenario::load("leveraged-products").unwrap();
        let c = &s.changes[0];
        let sub = c.scope.subtopics[0].as_str();
        let topic = c.scope.topic.as_deref().unwrap();
        let jur = c.scope.jurisdictions[0].as_str();
        let marker = c.wrong[0].as_str();
        let before = c.effective_ms - 1;
        let after = c.effective_ms;
        let text = format!("You could buy {marker} today.");
        let at = |ms, j| Slice {
            topic,
            subtopic: sub,
            locale: "en-GB",
            jurisdiction: j,
            at_ms: ms,
        };
        check(&s, at(before, jur), &text, false, Grade::Good);
        check(&s, at(after, jur), &text, false, Grade::Bad);
        check(&s, at(after, jur), &text.to_uppercase(), false, Grade::Bad);
        check(&s, at(after, jur), &text, true, Grade::Withheld);
        check(
            &s,
            at(after, jur),
            "A broad index fund.",
            false,
            Grade::Good,
        );
        // Another jurisdiction keeps the old truth.
        check(&s, at(after, "US"), &text, false, Grade::Good);
    }
}
