//! Rollouts: starting a canary or an activation, promoting and rolling back by hand, and the
//! rollout worker's step that judges live canaries from the log (automatic promotions and
//! rollbacks appended with its state). The state machine is `keel_loop::update::rollout`.

use keel_core::{Clock, NewEvent, StoredEvent};
use keel_loop::update::rollout::{
    self, arm_of, evaluate, Evaluation, Rollout, RolloutScope, RolloutsConfig, Start, Tracker,
    UpdateConfig, ROLLOUT_CHANGED,
};
use keel_loop::update::GLOBAL_SCOPE;
use keel_store::{RolloutRow, Store};
use serde_json::{json, Value};

use crate::actor::{Actor, ADMIN};
use crate::error::ServiceError;
use crate::proposals::load_proposals;

/// A stored rollout as the state machine sees it.
pub fn rollout_of(r: &RolloutRow) -> Rollout {
    Rollout {
        id: r.id.clone(),
        version: r.version.clone(),
        baseline: r.baseline.clone(),
        percent: r.percent,
        scope: RolloutScope {
            tenant: r.tenant.clone(),
            locale: r.locale.clone(),
        },
        state: r.state.clone(),
        started_ms: r.started_ms,
        proposal: r.proposal.clone(),
    }
}

/// A published version by exact id or unique prefix (at least 8 characters): the one resolver
/// ([`keel_policy::version::resolve`]) behind every verb and endpoint that takes a version.
pub async fn resolve_version(store: &dyn Store, v: &str) -> Result<String, ServiceError> {
    let versions = store.policy_versions().await?;
    keel_policy::version::resolve(v, versions.iter().map(|x| x.version.as_str()))
        .map_err(version_error)
}

/// Like [`resolve_version`], also accepting the embedded default pack's version (interactions
/// served before anything was published record it).
pub async fn resolve_recorded_version(store: &dyn Store, v: &str) -> Result<String, ServiceError> {
    let versions = store.policy_versions().await?;
    let default = keel_policy::Policy::default_pack()
        .map(|p| p.version().to_string())
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    keel_policy::version::resolve(
        v,
        versions
            .iter()
            .map(|x| x.version.as_str())
            .chain([default.as_str()]),
    )
    .map_err(version_error)
}

/// A version resolver error as every surface reports it (404 unknown, 400 ambiguous or too
/// short).
pub fn version_error(e: keel_policy::PolicyError) -> ServiceError {
    match e {
        keel_policy::PolicyError::UnknownVersion(m) => ServiceError::NotFound(m),
        other => ServiceError::bad_param("version", other.to_string()),
    }
}

/// What a scope is served now, rollouts aside: a locale overlay at the same scope, else the
/// tenant's activation, else the global one (`None`: the embedded default pack).
async fn current_version(
    store: &dyn Store,
    scope: &RolloutScope,
    rows: &[RolloutRow],
) -> Result<Option<String>, ServiceError> {
    if scope.locale.is_some() {
        if let Some(r) = rows.iter().rev().find(|r| {
            (r.state == "active" || r.state == "promoted")
                && r.tenant == scope.tenant
                && r.locale == scope.locale
        }) {
            return Ok(Some(r.version.clone()));
        }
    }
    let acts = store.policy_activations().await?;
    let find = |s: &str| {
        acts.iter()
            .find(|a| a.scope == s)
            .map(|a| a.version.clone())
    };
    Ok(scope
        .tenant
        .as_deref()
        .and_then(find)
        .or_else(|| find(GLOBAL_SCOPE)))
}

/// The approved proposal that published `version`, if any.
async fn proposal_for_version(
    store: &dyn Store,
    version: &str,
) -> Result<Option<String>, ServiceError> {
    Ok(load_proposals(store)
        .await?
        .into_iter()
        .find(|p| p["version"] == version && p["status"] == "approved")
        .and_then(|p| p["id"].as_str().map(str::to_string)))
}

/// Starts a rollout of a published version: a canary below 100 %, an activation at 100 %.
#[allow(clippy::too_many_arguments)]
pub async fn start_rollout(
    store: &dyn Store,
    clock: &dyn Clock,
    version: &str,
    percent: f64,
    scope: RolloutScope,
    reason: &str,
    actor: &str,
    id: String,
) -> Result<Rollout, ServiceError> {
    if let Some(t) = &scope.tenant {
        keel_core::auth::validate_tenant(t)
            .map_err(|e| ServiceError::bad_param("tenant", e.to_string()))?;
    }
    if let Some(l) = &scope.locale {
        if l.is_empty() || l.len() > 35 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ServiceError::bad_param("locale", "expected a BCP 47 tag"));
        }
    }
    let version = resolve_version(store, version).await?;
    let rows = store.rollouts().await?;
    let baseline = current_version(store, &scope, &rows).await?;
    let live: Vec<Rollout> = rows
        .iter()
        .filter(|r| matches!(r.state.as_str(), "canary" | "active" | "promoted"))
        .map(rollout_of)
        .collect();
    let live_refs: Vec<&Rollout> = live.iter().collect();
    let proposal = proposal_for_version(store, &version).await?;
    let events = rollout::start(
        &Start {
            id: &id,
            version: &version,
            baseline: baseline.as_deref(),
            percent,
            scope,
            reason,
            proposal: proposal.as_deref(),
        },
        &live_refs,
        actor,
        clock.now_ms(),
    )?;
    let stored = append_guarded(store, events).await?;
    stored
        .iter()
        .rev()
        .find(|e| e.kind == ROLLOUT_CHANGED)
        .and_then(|e| Rollout::from_payload(&e.payload))
        .ok_or_else(|| ServiceError::Internal("rollout event missing".into()))
}

/// Appends events whose projections carry guards; a guard failure is a 409.
pub(crate) async fn append_guarded(
    store: &dyn Store,
    events: Vec<NewEvent>,
) -> Result<Vec<StoredEvent>, ServiceError> {
    store.append(events).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("CHECK constraint") || text.contains("UNIQUE constraint") {
            ServiceError::Conflict(
                "the state changed meanwhile (another step was taken first); reload and retry"
                    .into(),
            )
        } else {
            e.into()
        }
    })
}

/// One rollout's stored row by id.
pub async fn rollout_row(store: &dyn Store, id: &str) -> Result<RolloutRow, ServiceError> {
    store
        .rollouts()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ServiceError::NotFound(format!("No rollout `{id}`.")))
}

/// One rollout by id.
pub async fn rollout_by_id(store: &dyn Store, id: &str) -> Result<Rollout, ServiceError> {
    Ok(rollout_of(&rollout_row(store, id).await?))
}

/// Promotes (`promote = true`) or rolls back a rollout by hand.
pub async fn end_rollout(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    promote: bool,
    reason: &str,
    actor: &str,
) -> Result<Rollout, ServiceError> {
    let r = rollout_by_id(store, id).await?;
    let mut events = if promote {
        rollout::promote(&r, reason, actor, clock.now_ms(), None)
    } else {
        rollout::rollback(&r, reason, actor, clock.now_ms(), None)
    }?;
    if promote && r.is_fact() {
        events.extend(fact_promotion(store, &r, reason, actor, clock.now_ms()).await?);
    }
    append_guarded(store, events).await?;
    rollout_by_id(store, id).await
}

/// The `FactSet` a fact rollout's promotion appends: its proposal's fact version, checked
/// against the registry as it is now (its effective dates kept: a date still ahead waits).
pub async fn fact_promotion(
    store: &dyn Store,
    r: &Rollout,
    reason: &str,
    actor: &str,
    now_ms: i64,
) -> Result<Vec<NewEvent>, ServiceError> {
    let pid = r.proposal.as_deref().unwrap_or_default();
    let doc = crate::proposals::proposal_by_id(store, pid, false).await?;
    let facts = crate::proposals::proposal_facts(&doc)?;
    let existing: Vec<keel_policy::Fact> = crate::facts::load(store, None)
        .await?
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let mut evs = keel_loop::facts::fact_set_events(&facts, &existing, reason, actor, now_ms)
        .map_err(|e| crate::error::unprocessable(e.to_string()))?;
    for e in &mut evs {
        e.payload["proposal"] = json!(pid);
        e.payload["rollout"] = json!(r.id);
    }
    Ok(evs)
}

/// The worker's state key.
pub const ROLLOUTS_KEY: &str = "rollouts";

static STEP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Processes every event committed so far: counts guard metrics per arm of live canaries and
/// appends automatic promotions and rollbacks (actor `system`) together with the worker's new
/// state. Returns the tracker (its cursor is the last sequence processed).
pub async fn rollouts_catch_up(
    store: &dyn Store,
    clock: &dyn Clock,
    cfg: &UpdateConfig,
    plans: &RolloutsConfig,
) -> Result<Tracker, ServiceError> {
    let _one_at_a_time = STEP.lock().await;
    let mut tracker = match store.load_state(ROLLOUTS_KEY).await? {
        Some(j) => match Tracker::from_json(&j) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "rollout worker state unreadable; starting fresh");
                Tracker::default()
            }
        },
        None => Tracker::default(),
    };
    loop {
        let events = store.events_after(tracker.cursor, 2_000).await?;
        let had_events = !events.is_empty();
        for ev in &events {
            let arm = if tracker.needs_arm(ev) {
                match ev.payload["interaction_id"].as_str() {
                    Some(ix) => store.interaction(ix).await?.and_then(|r| arm_of(&r.record)),
                    None => None,
                }
            } else {
                None
            };
            tracker.observe(ev, arm);
        }
        let now = clock.now_ms();
        let analyses =
            |t: &Tracker| -> i64 { t.rollouts.values().map(|r| r.last_analysis_ms).sum() };
        let before = analyses(&tracker);
        let steps = tracker.decide(cfg, plans, now);
        let analysed = analyses(&tracker) != before;
        let live: Vec<String> = if steps.is_empty() {
            Vec::new()
        } else {
            store
                .rollouts()
                .await?
                .into_iter()
                .filter(|r| r.state == "canary")
                .map(|r| r.id)
                .collect()
        };
        let mut drafts = Vec::new();
        for s in steps.iter().filter(|s| live.contains(&s.rollout.id)) {
            let extra = Some(json!({"evaluation": s.evaluation, "automatic": true}));
            let what = match (s.promote, s.to_percent >= 100.0) {
                (true, true) => "promotion".to_string(),
                (true, false) => format!("step to {} %", s.to_percent),
                (false, _) => "rollback".to_string(),
            };
            let reason = format!("automatic {what}: {}", s.evaluation.reason);
            let evs = if s.promote {
                rollout::advance(&s.rollout, s.to_percent, &reason, "system", now, extra)
            } else {
                rollout::rollback(&s.rollout, &reason, "system", now, extra)
            };
            let evs = match evs {
                Ok(e) if s.rollout.is_fact() && s.promote && s.to_percent >= 100.0 => {
                    match fact_promotion(store, &s.rollout, &reason, "system", now).await {
                        Ok(f) => Ok(e.into_iter().chain(f).collect()),
                        Err(err) => {
                            tracing::warn!(rollout = %s.rollout.id, error = %err, "fact promotion refused");
                            continue;
                        }
                    }
                }
                other => other,
            };
            match evs {
                Ok(e) => drafts.extend(e),
                Err(e) => {
                    tracing::warn!(rollout = %s.rollout.id, error = %e, "automatic step refused")
                }
            }
        }
        if had_events || analysed || !drafts.is_empty() {
            let json = tracker.to_json()?;
            let stored = store.append_with_state(drafts, ROLLOUTS_KEY, json).await?;
            for e in stored.iter().filter(|e| e.kind == ROLLOUT_CHANGED) {
                let state = match e.payload["state"].as_str() {
                    Some("promoted") => "promoted",
                    Some("canary") => "step",
                    _ => "rolled_back",
                };
                metrics::counter!(crate::telemetry::ROLLOUT_STEPS, "state" => state).increment(1);
                // A rollback needs an operator's eye; a step or promotion is routine.
                if state == "rolled_back" {
                    tracing::warn!(rollout = %e.payload["id"], state = %e.payload["state"], reason = %e.payload["reason"], "rollout rolled back automatically");
                } else {
                    tracing::info!(rollout = %e.payload["id"], state = %e.payload["state"], reason = %e.payload["reason"], "rollout changed automatically");
                }
            }
        }
        if !had_events {
            let live = tracker
                .rollouts
                .values()
                .filter(|t| t.rollout.is_canary())
                .count();
            metrics::gauge!(crate::telemetry::CANARIES_LIVE).set(live as f64);
            return Ok(tracker);
        }
    }
}

/// Who promoted a rollout (`"worker"` for the rollout worker), from its row.
pub fn promoted_by(r: &RolloutRow) -> Option<String> {
    (r.state == "promoted").then(|| {
        if r.actor == "system" {
            "worker".to_string()
        } else {
            r.actor.clone()
        }
    })
}

/// A rollout with its guard readings, its analysis plan and step, and `promoted_by`.
pub fn rollout_json(
    r: &RolloutRow,
    tracker: &Tracker,
    cfg: &UpdateConfig,
    plans: &RolloutsConfig,
    now_ms: i64,
) -> Value {
    let row = r;
    let r = &rollout_of(row);
    let mut v = json!(r);
    v["baseline"] = json!(r.baseline);
    v["promoted_by"] = json!(promoted_by(row));
    let plan = plans.plan_for(r.scope.tenant.as_deref(), cfg);
    v["plan"] = json!(plan);
    if let Some(t) = tracker.rollouts.get(&r.id) {
        let step = Tracker::progress(t, &plan, now_ms);
        let e: Evaluation = evaluate(&t.canary, &t.baseline, cfg, &plan, &step, r.percent);
        v["step"] = json!(step);
        v["arms"] = json!({"canary": t.canary, "baseline": t.baseline});
        v["guards"] = json!(e.guards);
        v["verdict"] = json!(if r.is_canary() {
            e.verdict
        } else {
            r.state.clone()
        });
        v["verdict_reason"] = json!(e.reason);
    }
    v
}

/// An activation: a published version (exact id) for one tenant or every tenant.
#[derive(Debug, Clone)]
pub struct Activation<'a> {
    pub version: &'a str,
    /// `None`: every tenant (needs an actor that sees every tenant).
    pub tenant: Option<String>,
    pub reason: &'a str,
    /// Required (with a non-empty reason) for a version that lacks the default pack's
    /// protections (see [`crate::floor`]).
    pub allow_weaker_than_default: bool,
    /// The rollout id to use.
    pub id: String,
}

/// An activation done: the rollout at 100 % and warnings for the operator (a tenant that no
/// app key serves yet).
#[derive(Debug, Clone)]
pub struct Activated {
    pub rollout: Rollout,
    pub warnings: Vec<String>,
}

/// Activates a published version (admins; a tenant's admin only for its own tenant): a
/// rollout at 100 %, which supersedes a live canary of the scope. The version is an id or a
/// unique prefix ([`resolve_version`]); a version weaker than the default pack is refused
/// unless `allow_weaker_than_default` with a reason ([`crate::floor::check_activation`]).
pub async fn activate(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    a: Activation<'_>,
) -> Result<Activated, ServiceError> {
    actor.require(ADMIN)?;
    match &a.tenant {
        Some(t) => {
            keel_core::auth::validate_tenant(t)
                .map_err(|e| ServiceError::bad_param("tenant", e.to_string()))?;
            if !actor.sees(t) {
                return Err(ServiceError::Forbidden(format!(
                    "this key cannot activate policies for tenant {t}"
                )));
            }
        }
        None if actor.tenant_filter().is_some() => {
            return Err(ServiceError::Forbidden(
                "activating for every tenant needs an all-tenant admin key; pass {\"tenant\": …}"
                    .into(),
            ));
        }
        None => {}
    }
    let version = resolve_version(store, a.version).await?;
    let reason =
        crate::floor::check_activation(store, &version, a.allow_weaker_than_default, a.reason)
            .await?;
    let warnings: Vec<String> = crate::floor::tenant_without_keys(store, a.tenant.as_deref())
        .await?
        .into_iter()
        .collect();
    let scope = RolloutScope {
        tenant: a.tenant,
        locale: None,
    };
    let rollout = start_rollout(
        store, clock, &version, 100.0, scope, &reason, &actor.who, a.id,
    )
    .await?;
    Ok(Activated { rollout, warnings })
}

/// A rollout an actor asks for.
#[derive(Debug, Clone)]
pub struct RolloutRequest<'a> {
    pub version: &'a str,
    pub percent: f64,
    pub scope: RolloutScope,
    pub reason: &'a str,
    /// Required (with a non-empty reason) for a version that lacks the default pack's
    /// protections (see [`crate::floor`]).
    pub allow_weaker_than_default: bool,
    /// The rollout id to use.
    pub id: String,
}

/// Starts a rollout (admins; a tenant's admin only for its own tenant, and only an all-tenant
/// admin for every tenant).
pub async fn start(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    r: RolloutRequest<'_>,
) -> Result<Rollout, ServiceError> {
    actor.require(ADMIN)?;
    match &r.scope.tenant {
        Some(t) if !actor.sees(t) => {
            return Err(ServiceError::Forbidden(format!(
                "this key cannot roll out policies for tenant {t}"
            )))
        }
        None if actor.tenant_filter().is_some() => {
            return Err(ServiceError::Forbidden(
                "a rollout for every tenant needs an all-tenant admin key; pass {\"tenant\": …}"
                    .into(),
            ))
        }
        _ => {}
    }
    let (version, percent) = (r.version, r.percent);
    let reason =
        crate::floor::check_activation(store, version, r.allow_weaker_than_default, r.reason)
            .await?;
    start_rollout(
        store, clock, version, percent, r.scope, &reason, &actor.who, r.id,
    )
    .await
}
