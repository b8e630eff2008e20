//! A rule's scope: where it applies (the one [`keel_core::Scope`]) and its effective
//! times.

use chrono::{DateTime, Utc};

use super::compile::{parse_time, RuleErrors};
use crate::bundle::ScopeSpec;
use crate::input::EvalContext;

/// A rule's scope: where (the one [`keel_core::Scope`]) and when.
pub(super) struct Scope {
    segments: keel_core::Scope,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Scope {
    pub(super) fn matches(&self, ctx: &EvalContext) -> bool {
        self.segments.covers(&ctx.segment())
            && self.from.is_none_or(|f| ctx.now >= f)
            && self.until.is_none_or(|u| ctx.now < u)
    }
}

pub(super) fn compile_scope(s: &ScopeSpec, errs: &mut RuleErrors) -> Scope {
    let mut time = |v: &Option<String>| -> Option<DateTime<Utc>> {
        let v = v.as_deref()?;
        match parse_time(v) {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(("scope", e));
                None
            }
        }
    };
    let from = time(&s.effective_from);
    let until = time(&s.effective_until);
    if let (Some(f), Some(u)) = (from, until) {
        if f >= u {
            errs.push((
                "scope",
                "`effective_from` must be before `effective_until`".into(),
            ));
        }
    }
    Scope {
        segments: keel_core::Scope {
            tenants: s.tenants.clone(),
            locales: s.locales.clone(),
            jurisdictions: s.jurisdictions.clone(),
            ..keel_core::Scope::default()
        },
        from,
        until,
    }
}
