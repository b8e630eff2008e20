//! The rollout state machine: where a rollout applies ([`RolloutScope`]), the [`Rollout`] as
//! its latest `RolloutChanged` event describes it, and the checked transitions `start`,
//! `promote` and `rollback` that draft its events.

use keel_core::NewEvent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ROLLOUT_CHANGED;
use crate::update::{activated_event, GLOBAL_SCOPE};

/// Where a rollout applies: one tenant or all, one locale (prefix) or all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl RolloutScope {
    /// `tenant|locale` with `*` for "any": at most one canary runs per key.
    pub fn key(&self) -> String {
        format!(
            "{}|{}",
            self.tenant.as_deref().unwrap_or(GLOBAL_SCOPE),
            self.locale.as_deref().unwrap_or(GLOBAL_SCOPE)
        )
    }

    /// Whether a request of `tenant` in `locale` falls in this scope (the one
    /// [`keel_core::Scope::covers`]: `ja` covers `ja-JP` and `ja_JP`).
    pub fn covers(&self, tenant: &str, locale: Option<&str>) -> bool {
        keel_core::Scope::of(self.tenant.as_deref(), self.locale.as_deref(), None).covers(
            &keel_core::Segment {
                tenant,
                locale,
                ..keel_core::Segment::default()
            },
        )
    }

    /// Higher = more specific (tenant counts more than locale).
    pub fn specificity(&self) -> u8 {
        u8::from(self.tenant.is_some()) * 2 + u8::from(self.locale.is_some())
    }

    /// The activation scope a 100 % rollout maps to (`None` for locale-scoped rollouts,
    /// which the runtime keeps as an overlay).
    pub fn activation_scope(&self) -> Option<&str> {
        if self.locale.is_some() {
            None
        } else {
            Some(self.tenant.as_deref().unwrap_or(GLOBAL_SCOPE))
        }
    }
}

/// A rollout as its latest `RolloutChanged` event describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub version: String,
    /// What the scope was served before (`None`: the embedded default pack).
    #[serde(default)]
    pub baseline: Option<String>,
    pub percent: f64,
    #[serde(default)]
    pub scope: RolloutScope,
    pub state: String,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

impl Rollout {
    /// Reads a `RolloutChanged` payload.
    pub fn from_payload(v: &Value) -> Option<Rollout> {
        serde_json::from_value(v.clone()).ok()
    }

    pub fn is_canary(&self) -> bool {
        self.state == "canary"
    }

    /// A fact rollout: its `version` is `fact:<proposal id>` and promoting it sets the fact.
    pub fn is_fact(&self) -> bool {
        self.version.starts_with(FACT_VERSION_PREFIX)
    }

    /// The lane at most one canary runs in: the scope (`tenant|locale`), and for a fact
    /// rollout its version too (a fact canary runs beside a policy canary of its scope).
    pub fn lane(&self) -> String {
        if self.is_fact() {
            format!("{}|{}", self.scope.key(), self.version)
        } else {
            self.scope.key()
        }
    }
}

/// The `version` of a fact rollout: this prefix and the fact proposal's id.
pub const FACT_VERSION_PREFIX: &str = "fact:";

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// Bad input (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The rollout's state does not allow it (a 409).
    #[error("{0}")]
    Conflict(String),
}

fn changed(r: &Rollout, reason: &str, actor: &str, at_ms: i64, extra: Option<Value>) -> NewEvent {
    let mut payload = json!(r);
    payload["reason"] = Value::String(reason.to_string());
    payload["scope_key"] = Value::String(r.lane());
    if let Some(Value::Object(m)) = extra {
        for (k, v) in m {
            payload[k] = v;
        }
    }
    NewEvent {
        kind: ROLLOUT_CHANGED.to_string(),
        actor: actor.to_string(),
        tenant: r
            .scope
            .tenant
            .clone()
            .unwrap_or_else(|| GLOBAL_SCOPE.to_string()),
        at_ms,
        payload,
    }
}

fn need_reason(reason: &str) -> Result<(), RolloutError> {
    if reason.trim().is_empty() {
        Err(RolloutError::Invalid(
            "a rollout step needs a reason".into(),
        ))
    } else {
        Ok(())
    }
}

/// What starting a rollout needs.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub baseline: Option<&'a str>,
    pub percent: f64,
    pub scope: RolloutScope,
    pub reason: &'a str,
    pub proposal: Option<&'a str>,
}

/// Events that start a rollout: a canary below 100 %, else an `active` rollout (plus the
/// `PolicyActivated` that makes it the scope's version). `live` are the rollouts currently in
/// force (canary, active or promoted) at the same scope: a new canary conflicts with a live
/// canary; a 100 % rollout supersedes them.
pub fn start(
    s: &Start<'_>,
    live: &[&Rollout],
    actor: &str,
    at_ms: i64,
) -> Result<Vec<NewEvent>, RolloutError> {
    need_reason(s.reason)?;
    if !(s.percent > 0.0 && s.percent <= 100.0) {
        return Err(RolloutError::Invalid(
            "percent must be above 0 and at most 100".into(),
        ));
    }
    let full = s.percent >= 100.0;
    let mut events = Vec::new();
    let is_fact = s.version.starts_with(FACT_VERSION_PREFIX);
    if is_fact && full {
        return Err(RolloutError::Invalid(
            "a fact rollout starts as a canary; promoting it sets the fact".into(),
        ));
    }
    let lane = |r: &Rollout| r.lane();
    let new_lane = if is_fact {
        format!("{}|{}", s.scope.key(), s.version)
    } else {
        s.scope.key()
    };
    for old in live.iter().filter(|r| lane(r) == new_lane) {
        if old.is_canary() && !full {
            return Err(RolloutError::Conflict(format!(
                "rollout {} is a live canary for this scope; promote or roll it back first",
                old.id
            )));
        }
        let mut o = (*old).clone();
        o.state = "superseded".into();
        events.push(changed(
            &o,
            &format!("superseded by {}", s.id),
            actor,
            at_ms,
            None,
        ));
    }
    let r = Rollout {
        id: s.id.to_string(),
        version: s.version.to_string(),
        baseline: s.baseline.map(str::to_string),
        percent: if full { 100.0 } else { s.percent },
        scope: s.scope.clone(),
        state: if full { "active" } else { "canary" }.to_string(),
        started_ms: at_ms,
        proposal: s.proposal.map(str::to_string),
    };
    events.push(changed(&r, s.reason, actor, at_ms, None));
    if full {
        if let Some(scope) = r.scope.activation_scope() {
            events.push(activated_event(&r.version, scope, actor, at_ms));
        }
    }
    Ok(events)
}

/// Events that promote a canary to 100 % (`extra` adds fields such as the guard verdicts).
pub fn promote(
    r: &Rollout,
    reason: &str,
    actor: &str,
    at_ms: i64,
    extra: Option<Value>,
) -> Result<Vec<NewEvent>, RolloutError> {
    need_reason(reason)?;
    if !r.is_canary() {
        return Err(RolloutError::Conflict(format!(
            "rollout {} is {}; only a canary can be promoted",
            r.id, r.state
        )));
    }
    let mut p = r.clone();
    p.state = "promoted".into();
    p.percent = 100.0;
    let mut events = vec![changed(&p, reason, actor, at_ms, extra)];
    // A fact rollout's promotion sets the fact (the caller appends its `FactSet`).
    if let Some(scope) = p.scope.activation_scope().filter(|_| !p.is_fact()) {
        events.push(activated_event(&p.version, scope, actor, at_ms));
    }
    Ok(events)
}

/// Events that move a canary to its next analysis step (a higher percentage below 100; at
/// 100 this is [`promote`]). The split is sticky, so everyone already in the canary stays.
pub fn advance(
    r: &Rollout,
    percent: f64,
    reason: &str,
    actor: &str,
    at_ms: i64,
    extra: Option<Value>,
) -> Result<Vec<NewEvent>, RolloutError> {
    if percent >= 100.0 {
        return promote(r, reason, actor, at_ms, extra);
    }
    need_reason(reason)?;
    if !r.is_canary() {
        return Err(RolloutError::Conflict(format!(
            "rollout {} is {}; only a canary moves to its next step",
            r.id, r.state
        )));
    }
    if percent <= r.percent || percent.is_nan() {
        return Err(RolloutError::Invalid(format!(
            "a step raises the canary's share: {percent} % is not above {} %",
            r.percent
        )));
    }
    let mut a = r.clone();
    a.percent = percent;
    Ok(vec![changed(&a, reason, actor, at_ms, extra)])
}

/// Events that roll a rollout back: a canary stops (its scope is served as before); a promoted
/// or active rollout gives the scope back to its baseline version.
pub fn rollback(
    r: &Rollout,
    reason: &str,
    actor: &str,
    at_ms: i64,
    extra: Option<Value>,
) -> Result<Vec<NewEvent>, RolloutError> {
    need_reason(reason)?;
    let mut b = r.clone();
    b.state = "rolled_back".into();
    b.percent = 0.0;
    match r.state.as_str() {
        "canary" => Ok(vec![changed(&b, reason, actor, at_ms, extra)]),
        "promoted" | "active" if r.is_fact() => Err(RolloutError::Conflict(format!(
            "rollout {} set its fact; propose the next version of the fact instead",
            r.id
        ))),
        "promoted" | "active" => {
            let mut events = vec![changed(&b, reason, actor, at_ms, extra)];
            if let Some(scope) = b.scope.activation_scope() {
                let Some(base) = &r.baseline else {
                    return Err(RolloutError::Conflict(format!(
                        "rollout {} replaced the embedded default pack; activate a version instead",
                        r.id
                    )));
                };
                events.push(activated_event(base, scope, actor, at_ms));
            }
            Ok(events)
        }
        other => Err(RolloutError::Conflict(format!(
            "rollout {} is {other}; nothing to roll back",
            r.id
        ))),
    }
}
