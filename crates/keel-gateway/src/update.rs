//! The update pipeline's IO: proposals (drafted, approved, rejected), rollouts (started,
//! promoted, rolled back), the rollout worker that judges live canaries, backtests and the
//! policy history. Shared by the `/api` handlers and the `keel policy` verbs; the rules are in
//! `keel_loop::update`.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_core::{Clock, NewEvent, StoredEvent};
use keel_loop::review::{kinds, Suggestion};
use keel_loop::update::backtest::{self, BacktestReport, Known};
use keel_loop::update::proposal::{
    self, check_approval, decided_event, Refusal, PROPOSAL_CREATED, PROPOSAL_DECIDED,
};
use keel_loop::update::rollout::{
    self, arm_of, evaluate, Evaluation, Rollout, RolloutError, RolloutScope, Start, Tracker,
    UpdateConfig, ROLLOUT_CHANGED,
};
use keel_loop::update::{bundle_from_payload, published_event, GLOBAL_SCOPE};
use keel_policy::{Bundle, Policy, SharedFacts};
use keel_store::{RolloutRow, Store};
use serde_json::{json, Value};

use crate::error::GatewayError;

/// Who acts: the actor string recorded on events, and the person (key name, else key id) the
/// two-person rule compares.
#[derive(Debug, Clone)]
pub struct Actor {
    pub actor: String,
    pub person: String,
}

impl Actor {
    pub fn from_key(k: &keel_core::ApiKeyRecord) -> Self {
        Self {
            actor: k.actor(),
            person: k.name.clone().unwrap_or_else(|| k.key_id.clone()),
        }
    }
}

fn rollout_err(e: RolloutError) -> GatewayError {
    match e {
        RolloutError::Invalid(m) => GatewayError::bad(m),
        RolloutError::Conflict(m) => GatewayError::Conflict(m),
    }
}

fn unprocessable(msg: impl Into<String>) -> GatewayError {
    GatewayError::Unprocessable(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Rollouts

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
pub async fn resolve_version(store: &dyn Store, v: &str) -> Result<String, GatewayError> {
    let versions = store.policy_versions().await?;
    keel_policy::version::resolve(v, versions.iter().map(|x| x.version.as_str()))
        .map_err(version_error)
}

/// Like [`resolve_version`], also accepting the embedded default pack's version (interactions
/// served before anything was published record it).
pub async fn resolve_recorded_version(store: &dyn Store, v: &str) -> Result<String, GatewayError> {
    let versions = store.policy_versions().await?;
    let default = keel_policy::Policy::default_pack()
        .map(|p| p.version().to_string())
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    keel_policy::version::resolve(
        v,
        versions
            .iter()
            .map(|x| x.version.as_str())
            .chain([default.as_str()]),
    )
    .map_err(version_error)
}

/// A version resolver error as the API reports it (404 unknown, 400 ambiguous or too short).
pub fn version_error(e: keel_policy::PolicyError) -> GatewayError {
    match e {
        keel_policy::PolicyError::UnknownVersion(m) => GatewayError::NotFound(m),
        other => GatewayError::bad_param("version", other.to_string()),
    }
}

/// What a scope is served now, rollouts aside: a locale overlay at the same scope, else the
/// tenant's activation, else the global one (`None`: the embedded default pack).
async fn current_version(
    store: &dyn Store,
    scope: &RolloutScope,
    rows: &[RolloutRow],
) -> Result<Option<String>, GatewayError> {
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
) -> Result<Option<String>, GatewayError> {
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
) -> Result<Rollout, GatewayError> {
    if let Some(t) = &scope.tenant {
        keel_core::auth::validate_tenant(t)
            .map_err(|e| GatewayError::bad_param("tenant", e.to_string()))?;
    }
    if let Some(l) = &scope.locale {
        if l.is_empty() || l.len() > 35 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(GatewayError::bad_param("locale", "expected a BCP 47 tag"));
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
    )
    .map_err(rollout_err)?;
    let stored = append_guarded(store, events).await?;
    stored
        .iter()
        .rev()
        .find(|e| e.kind == ROLLOUT_CHANGED)
        .and_then(|e| Rollout::from_payload(&e.payload))
        .ok_or_else(|| GatewayError::Internal("rollout event missing".into()))
}

/// Appends events whose projections carry guards; a guard failure is a 409.
async fn append_guarded(
    store: &dyn Store,
    events: Vec<NewEvent>,
) -> Result<Vec<StoredEvent>, GatewayError> {
    store.append(events).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("CHECK constraint") || text.contains("UNIQUE constraint") {
            GatewayError::Conflict(
                "the state changed meanwhile (another step was taken first); reload and retry"
                    .into(),
            )
        } else {
            e.into()
        }
    })
}

/// One rollout by id.
pub async fn rollout_by_id(store: &dyn Store, id: &str) -> Result<Rollout, GatewayError> {
    store
        .rollouts()
        .await?
        .iter()
        .find(|r| r.id == id)
        .map(rollout_of)
        .ok_or_else(|| GatewayError::NotFound(format!("No rollout `{id}`.")))
}

/// Promotes (`promote = true`) or rolls back a rollout by hand.
pub async fn end_rollout(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    promote: bool,
    reason: &str,
    actor: &str,
) -> Result<Rollout, GatewayError> {
    let r = rollout_by_id(store, id).await?;
    let events = if promote {
        rollout::promote(&r, reason, actor, clock.now_ms(), None)
    } else {
        rollout::rollback(&r, reason, actor, clock.now_ms(), None)
    }
    .map_err(rollout_err)?;
    append_guarded(store, events).await?;
    rollout_by_id(store, id).await
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
) -> Result<Tracker, GatewayError> {
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
        let steps = tracker.decide(cfg, now);
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
            let extra = Some(json!({"evaluation": s.evaluation}));
            let reason = format!(
                "automatic {}: {}",
                if s.promote { "promotion" } else { "rollback" },
                s.evaluation.reason
            );
            let evs = if s.promote {
                rollout::promote(&s.rollout, &reason, "system", now, extra)
            } else {
                rollout::rollback(&s.rollout, &reason, "system", now, extra)
            };
            match evs {
                Ok(e) => drafts.extend(e),
                Err(e) => {
                    tracing::warn!(rollout = %s.rollout.id, error = %e, "automatic step refused")
                }
            }
        }
        if had_events || !drafts.is_empty() {
            let json = tracker
                .to_json()
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            let stored = store.append_with_state(drafts, ROLLOUTS_KEY, json).await?;
            for e in stored.iter().filter(|e| e.kind == ROLLOUT_CHANGED) {
                let state = if e.payload["state"] == "promoted" {
                    "promoted"
                } else {
                    "rolled_back"
                };
                metrics::counter!(crate::telemetry::ROLLOUT_STEPS, "state" => state).increment(1);
                tracing::warn!(rollout = %e.payload["id"], state = %e.payload["state"], reason = %e.payload["reason"], "rollout changed automatically");
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

/// A rollout with its guard readings.
pub fn rollout_json(r: &Rollout, tracker: &Tracker, cfg: &UpdateConfig, now_ms: i64) -> Value {
    let mut v = json!(r);
    v["baseline"] = json!(r.baseline);
    if let Some(t) = tracker.rollouts.get(&r.id) {
        let e: Evaluation = evaluate(&t.canary, &t.baseline, cfg, now_ms - r.started_ms);
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

// ---------------------------------------------------------------------------------------------
// Proposals

/// Every proposal (creation folded with its decision), oldest first, candidate files left out.
pub async fn load_proposals(store: &dyn Store) -> Result<Vec<Value>, GatewayError> {
    let events = store
        .events_in_range(
            &[PROPOSAL_CREATED, PROPOSAL_DECIDED],
            None,
            i64::MIN,
            i64::MAX,
        )
        .await?;
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for e in events {
        let Some(id) = e.payload["id"].as_str().map(str::to_string) else {
            continue;
        };
        if e.kind == PROPOSAL_CREATED {
            let mut doc = e.payload.clone();
            if let Some(m) = doc.as_object_mut() {
                m.remove("files");
            }
            doc["seq"] = json!(e.seq);
            doc["status"] = json!("pending");
            doc["tenant"] = json!(e.tenant);
            order.push(id.clone());
            by_id.insert(id, doc);
        } else if let Some(doc) = by_id.get_mut(&id) {
            doc["status"] = e.payload["decision"].clone();
            doc["decided_by"] = json!(e.actor);
            doc["decided_ms"] = json!(e.at_ms);
            doc["decision_reason"] = e.payload["reason"].clone();
            if !e.payload["version"].is_null() {
                doc["version"] = e.payload["version"].clone();
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

/// One proposal; `with_files` adds the candidate bundle's files.
pub async fn proposal_by_id(
    store: &dyn Store,
    id: &str,
    with_files: bool,
) -> Result<Value, GatewayError> {
    let mut doc = load_proposals(store)
        .await?
        .into_iter()
        .find(|p| p["id"] == id)
        .ok_or_else(|| GatewayError::NotFound(format!("No proposal `{id}`.")))?;
    if with_files {
        let seq = doc["seq"].as_i64().unwrap_or(0);
        let ev = store.events_after(seq - 1, 1).await?;
        if let Some(e) = ev.first().filter(|e| e.seq == seq) {
            doc["files"] = e.payload["files"].clone();
        }
    }
    Ok(doc)
}

/// Where a proposal comes from.
#[derive(Debug, Clone)]
pub enum ProposalSource {
    Review(String),
    Alert(String, Suggestion),
    Direct(Suggestion),
}

/// The bundle in force for `tenant` (else globally), or the embedded default pack.
pub async fn base_bundle(
    store: &dyn Store,
    tenant: Option<&str>,
) -> Result<(Option<String>, Bundle), GatewayError> {
    let acts = store.policy_activations().await?;
    let version = tenant
        .and_then(|t| acts.iter().find(|a| a.scope == t))
        .or_else(|| acts.iter().find(|a| a.scope == GLOBAL_SCOPE))
        .map(|a| a.version.clone());
    if let Some(v) = version {
        if let Some(p) = store.policy_bundle(&v).await? {
            let b = bundle_from_payload(&p).map_err(|e| GatewayError::Internal(e.to_string()))?;
            return Ok((Some(v), b));
        }
    }
    Ok((None, Bundle::from_files(&keel_policy::default_pack_files())))
}

/// Drafts a proposal and appends its `ProposalCreated` event. `tenant_key` is the caller's
/// tenant when it is tenant-scoped: the suggestion is then confined to it.
#[allow(clippy::too_many_arguments)]
pub async fn create_proposal(
    store: &dyn Store,
    clock: &dyn Clock,
    source: ProposalSource,
    reason: Option<&str>,
    tenant: Option<&str>,
    tenant_key: Option<&str>,
    actor: &Actor,
    id: String,
) -> Result<Value, GatewayError> {
    let (mut suggestion, source_doc, default_reason) = match &source {
        ProposalSource::Review(item_id) => {
            let item = store
                .review_item(item_id)
                .await?
                .filter(|i| tenant_key.is_none_or(|t| t == i.tenant))
                .ok_or_else(|| GatewayError::NotFound(format!("No review item `{item_id}`.")))?;
            let labels = store.review_labels(item_id).await?;
            let Some(label) = labels
                .iter()
                .rev()
                .find(|l| !l.payload["suggestion"].is_null())
            else {
                return Err(unprocessable(format!(
                    "review item `{item_id}` has no label with a suggestion"
                )));
            };
            let mut s: Suggestion = serde_json::from_value(label.payload["suggestion"].clone())
                .map_err(|e| unprocessable(format!("the review's suggestion: {e}")))?;
            // A suggestion without a scope applies to the reviewed interaction's segment.
            if s.scope.is_none() {
                let ctx = &item.context;
                let one = |k: &str| {
                    ctx[k]
                        .as_str()
                        .map(|v| vec![v.to_string()])
                        .unwrap_or_default()
                };
                s.scope = Some(keel_loop::review::SuggestionScope {
                    tenants: vec![item.tenant.clone()],
                    locales: one("locale"),
                    jurisdictions: one("jurisdiction"),
                    topic: None,
                });
            }
            let why = format!(
                "review {item_id}: verdict {}{}",
                label.payload["verdict"].as_str().unwrap_or("?"),
                label.payload["notes"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            (
                s,
                json!({"review": item_id, "interaction": item.interaction_id,
                       "verdict": label.payload["verdict"], "reviewer": label.actor}),
                why,
            )
        }
        ProposalSource::Alert(alert_id, s) => {
            let alerts = store
                .list_alerts(&keel_store::AlertQuery {
                    tenant: tenant_key.map(str::to_string),
                    limit: 10_000,
                    ..Default::default()
                })
                .await?;
            let a = alerts
                .iter()
                .find(|a| a.id == *alert_id)
                .ok_or_else(|| GatewayError::NotFound(format!("No alert `{alert_id}`.")))?;
            (
                s.clone(),
                json!({"alert": alert_id, "metric": a.alert["metric"], "segment": a.alert["segment_key"]}),
                format!("alert {alert_id}"),
            )
        }
        ProposalSource::Direct(s) => (s.clone(), json!({}), String::new()),
    };
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .unwrap_or(default_reason);
    if reason.is_empty() {
        return Err(GatewayError::bad_param(
            "reason",
            "a proposal needs a reason",
        ));
    }
    // A tenant key proposes for its own tenant only.
    if let Some(t) = tenant_key {
        let sc = suggestion.scope.get_or_insert_with(Default::default);
        if sc.tenants.is_empty() {
            sc.tenants = vec![t.to_string()];
        } else if sc.tenants.iter().any(|x| x != t) {
            return Err(GatewayError::Forbidden(format!(
                "a key of tenant {t} can only propose changes scoped to `tenants: [{t}]`"
            )));
        }
    }
    let scope_tenant = suggestion
        .scope
        .as_ref()
        .and_then(|s| match s.tenants.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        });
    let tenant = tenant
        .map(str::to_string)
        .or(scope_tenant)
        .or(tenant_key.map(str::to_string))
        .unwrap_or_else(|| GLOBAL_SCOPE.to_string());
    let now = clock.now_ms();
    let mut doc = json!({
        "id": id, "status": "pending", "author": actor.actor, "author_name": actor.person,
        "reason": reason, "created_ms": now, "source": source_doc, "suggestion": suggestion,
    });
    doc["source"]["suggestion_kind"] = json!(suggestion.kind);
    if suggestion.kind == keel_loop::review::SuggestionKind::FactUpdate {
        let existing: Vec<keel_policy::Fact> = crate::api::facts::load(store, None)
            .await?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let (fact, diff) = proposal::draft_fact(&suggestion, &existing)
            .map_err(|e| unprocessable(e.to_string()))?;
        doc["kind"] = json!("fact");
        doc["fact"] = json!(fact);
        doc["diff"] = json!(diff);
    } else {
        let scope_tenant = (tenant != GLOBAL_SCOPE).then_some(tenant.as_str());
        let (base_version, base) = base_bundle(store, scope_tenant).await?;
        let draft = proposal::draft_policy(&base, &suggestion, &id, &reason)
            .map_err(|e| unprocessable(e.to_string()))?;
        doc["kind"] = json!("policy");
        doc["base_version"] = json!(base_version);
        doc["candidate_version"] = json!(draft.version);
        doc["rule"] = json!(draft.rule_id);
        doc["diff"] = json!(draft.diff);
        let files: serde_json::Map<String, Value> = draft
            .bundle
            .files()
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        doc["files"] = Value::Object(files);
    }
    let ev = proposal::created_event(doc, &tenant, &actor.actor, now);
    store.append(vec![ev]).await?;
    proposal_by_id(store, &id, false).await
}

/// Approves a proposal: a policy proposal publishes its candidate (not activated), a fact
/// proposal sets the fact; with the two-person rule the approver must be another person.
pub async fn approve_proposal(
    store: &dyn Store,
    clock: &dyn Clock,
    cfg: &UpdateConfig,
    id: &str,
    reason: &str,
    actor: &Actor,
) -> Result<Value, GatewayError> {
    let doc = proposal_by_id(store, id, true).await?;
    let status = doc["status"].as_str().unwrap_or("pending");
    let author = doc["author_name"].as_str().unwrap_or_default();
    match check_approval(status, author, &actor.person, cfg.two_person_rule) {
        Ok(()) => {}
        Err(Refusal::NotPending(s)) => {
            return Err(GatewayError::Conflict(format!(
                "proposal `{id}` is already {s}"
            )))
        }
        Err(Refusal::SamePerson) => {
            return Err(GatewayError::Forbidden(format!(
                "two-person rule: {} authored proposal `{id}`; another person must approve it",
                actor.person
            )))
        }
    }
    let tenant = doc["tenant"].as_str().unwrap_or(GLOBAL_SCOPE).to_string();
    let now = clock.now_ms();
    let why = format!(
        "proposal {id}: {}",
        doc["reason"].as_str().unwrap_or_default()
    );
    let mut events = Vec::new();
    let mut version = None;
    if doc["kind"] == "fact" {
        let fact: keel_policy::Fact = serde_json::from_value(doc["fact"].clone())
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let existing: Vec<keel_policy::Fact> = crate::api::facts::load(store, None)
            .await?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let mut evs =
            keel_loop::facts::fact_set_events(&[fact], &existing, &why, &actor.actor, now)
                .map_err(|e| unprocessable(e.to_string()))?;
        for e in &mut evs {
            e.payload["proposal"] = json!(id);
        }
        events.extend(evs);
    } else {
        let files: Vec<(String, String)> = doc["files"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let bundle = Bundle::from_files(&files);
        let policy = Policy::compile(&bundle).map_err(|e| unprocessable(e.to_string()))?;
        let v = policy.version().to_string();
        if !store
            .policy_versions()
            .await?
            .iter()
            .any(|x| x.version == v)
        {
            let mut ev = published_event(&bundle, &policy, &why, &actor.actor, now)
                .map_err(|e| unprocessable(e.to_string()))?;
            ev.payload["proposal"] = json!(id);
            events.push(ev);
        }
        version = Some(v);
    }
    events.push(
        decided_event(
            id,
            "approved",
            reason,
            version.as_deref(),
            &tenant,
            &actor.actor,
            now,
        )
        .map_err(|e| GatewayError::bad_param("reason", e.to_string()))?,
    );
    append_guarded(store, events).await?;
    proposal_by_id(store, id, false).await
}

/// Rejects a pending proposal.
pub async fn reject_proposal(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    reason: &str,
    actor: &Actor,
) -> Result<Value, GatewayError> {
    let doc = proposal_by_id(store, id, false).await?;
    if doc["status"] != "pending" {
        return Err(GatewayError::Conflict(format!(
            "proposal `{id}` is already {}",
            doc["status"].as_str().unwrap_or("decided")
        )));
    }
    let tenant = doc["tenant"].as_str().unwrap_or(GLOBAL_SCOPE).to_string();
    let ev = decided_event(
        id,
        "rejected",
        reason,
        None,
        &tenant,
        &actor.actor,
        clock.now_ms(),
    )
    .map_err(|e| GatewayError::bad_param("reason", e.to_string()))?;
    append_guarded(store, vec![ev]).await?;
    proposal_by_id(store, id, false).await
}

// ---------------------------------------------------------------------------------------------
// Backtests

/// Compiles a bundle with the facts registry plugged in (as the gateway would serve it).
pub async fn compile_candidate(
    store: &dyn Store,
    bundle: &Bundle,
    facts: Option<Arc<SharedFacts>>,
) -> Result<Policy, GatewayError> {
    let mut p = Policy::compile(bundle).map_err(|e| unprocessable(e.to_string()))?;
    let facts = match facts {
        Some(f) => f,
        None => {
            let all: Vec<_> = crate::api::facts::load(store, None)
                .await?
                .into_iter()
                .map(|(_, f)| f)
                .collect();
            let index =
                keel_loop::facts::index(all).map_err(|e| GatewayError::Internal(e.to_string()))?;
            let shared = SharedFacts::new();
            shared.set(Arc::new(index));
            Arc::new(shared)
        }
    };
    p.set_fact_checker(facts);
    Ok(p)
}

/// The candidate bundle of a proposal or a published version.
pub async fn candidate_bundle(
    store: &dyn Store,
    proposal: Option<&str>,
    version: Option<&str>,
) -> Result<Bundle, GatewayError> {
    if let Some(id) = proposal {
        let doc = proposal_by_id(store, id, true).await?;
        if doc["kind"] != "policy" {
            return Err(unprocessable(format!(
                "proposal `{id}` changes a fact; backtest a policy proposal"
            )));
        }
        return bundle_from_payload(&doc).map_err(|e| GatewayError::Internal(e.to_string()));
    }
    let Some(v) = version else {
        return Err(GatewayError::bad_param(
            "proposal",
            "give a `proposal` or a `version`",
        ));
    };
    let v = resolve_version(store, v).await?;
    let payload = store
        .policy_bundle(&v)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No published policy version `{v}`.")))?;
    bundle_from_payload(&payload).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Replays the interactions of `[since_ms, until_ms)` (one tenant or all; at most `limit`,
/// newest kept) through the version in force and through `candidate`: their difference, and
/// separately the drift since recording.
pub async fn run_backtest(
    store: &dyn Store,
    candidate: &Policy,
    tenant: Option<&str>,
    since_ms: i64,
    until_ms: i64,
    limit: usize,
) -> Result<BacktestReport, GatewayError> {
    let events = store
        .events_in_range(
            &[keel_core::EventKind::INTERACTION_RECORDED],
            tenant,
            since_ms,
            until_ms,
        )
        .await?;
    let skip = events.len().saturating_sub(limit);
    let records: Vec<Value> = events.into_iter().skip(skip).map(|e| e.payload).collect();
    let labels = store
        .events_in_range(
            &[kinds::FEEDBACK, kinds::COMPLETED],
            tenant,
            since_ms,
            i64::MAX,
        )
        .await?;
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    for e in labels {
        let Some(ix) = e.payload["interaction_id"].as_str() else {
            continue;
        };
        let k = known.entry(ix.to_string()).or_default();
        if e.kind == kinds::FEEDBACK {
            k.wrong_answer |= e.payload["wrong_answer"] == true;
        } else {
            match e.payload["verdict"].as_str() {
                Some("wrong_answer" | "outdated") => k.wrong_answer = true,
                Some("violation") => k.violation = true,
                _ => {}
            }
        }
    }
    // The base: what is in force for the scope now (tenant, else global, else the default
    // pack), replayed too, so only the candidate's own difference is reported.
    let (_, base_bundle) = base_bundle(store, tenant).await?;
    let base = compile_candidate(store, &base_bundle, None).await?;
    Ok(backtest::compare(&base, candidate, &records, &known, 20))
}

// ---------------------------------------------------------------------------------------------
// History

/// Versions, rollouts, fact changes and proposals in log order, with who, why, when, outcome
/// and links (`tenant`: only what concerns that tenant and every tenant).
pub async fn history(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<Value>, GatewayError> {
    let kinds_ = [
        "PolicyPublished",
        "PolicyActivated",
        ROLLOUT_CHANGED,
        keel_loop::facts::FACT_SET,
        PROPOSAL_CREATED,
        PROPOSAL_DECIDED,
    ];
    let events = store
        .events_in_range(&kinds_, None, i64::MIN, i64::MAX)
        .await?;
    let reviews: BTreeMap<String, Value> = events
        .iter()
        .filter(|e| e.kind == PROPOSAL_CREATED)
        .filter_map(|e| {
            Some((
                e.payload["id"].as_str()?.to_string(),
                e.payload["source"]["review"].clone(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for e in events {
        if tenant.is_some_and(|t| e.tenant != t && e.tenant != GLOBAL_SCOPE) {
            continue;
        }
        let p = &e.payload;
        let mut row = json!({"seq": e.seq, "at_ms": e.at_ms, "at": keel_core::clock::format_ms(e.at_ms),
                             "kind": e.kind, "actor": e.actor, "tenant": e.tenant,
                             "reason": p["reason"]});
        let proposal = match e.kind.as_str() {
            "PolicyPublished" => {
                row["version"] = p["version"].clone();
                row["outcome"] = json!("published");
                p["proposal"].as_str()
            }
            "PolicyActivated" => {
                row["version"] = p["version"].clone();
                row["scope"] = p["scope"].clone();
                row["outcome"] = json!("activated");
                None
            }
            ROLLOUT_CHANGED => {
                row["rollout"] = p["id"].clone();
                row["version"] = p["version"].clone();
                row["baseline"] = p["baseline"].clone();
                row["percent"] = p["percent"].clone();
                row["scope"] = p["scope"].clone();
                row["outcome"] = p["state"].clone();
                p["proposal"].as_str()
            }
            "FactSet" => {
                row["fact"] = json!({"key": p["fact"]["key"], "value": p["fact"]["value"],
                                     "effective_from": p["fact"]["effective_from"]});
                row["outcome"] = json!("set");
                p["proposal"].as_str()
            }
            PROPOSAL_CREATED => {
                row["outcome"] = json!("proposed");
                row["version"] = p["candidate_version"].clone();
                row["proposal_kind"] = p["kind"].clone();
                p["id"].as_str()
            }
            _ => {
                row["outcome"] = p["decision"].clone();
                row["version"] = p["version"].clone();
                p["id"].as_str()
            }
        };
        if let Some(pid) = proposal {
            row["proposal"] = json!(pid);
            if let Some(r) = reviews.get(pid).filter(|r| !r.is_null()) {
                row["review"] = r.clone();
            }
        }
        if p.is_null() {
            row["outcome"] = json!("erased");
        }
        out.push(row);
    }
    Ok(out)
}
