//! Proposals: a review's or an alert's suggestion drafted into a candidate (a policy bundle or
//! a fact version), listed, approved under the two-person rule (publishing or setting what it
//! proposes) or rejected. The drafting rules are `keel_loop::update::proposal`.

use std::collections::BTreeMap;

use keel_core::{Clock, Role};
use keel_loop::review::Suggestion;
use keel_loop::update::batch::{self, Touch};
use keel_loop::update::proposal::{
    self, check_approval, decided_event, Refusal, PROPOSAL_CREATED, PROPOSAL_DECIDED,
};
use keel_loop::update::rollout::{RolloutScope, RolloutsConfig, UpdateConfig, FACT_VERSION_PREFIX};
use keel_loop::update::{bundle_from_payload, published_event, GLOBAL_SCOPE};
use keel_policy::{Bundle, Policy};
use keel_store::Store;
use serde_json::{json, Value};

use crate::actor::Actor;
use crate::error::{unprocessable, ServiceError};
use crate::rollouts::append_guarded;

/// Every proposal (creation folded with its decision), oldest first, candidate files left out.
pub async fn load_proposals(store: &dyn Store) -> Result<Vec<Value>, ServiceError> {
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
) -> Result<Value, ServiceError> {
    let mut doc = load_proposals(store)
        .await?
        .into_iter()
        .find(|p| p["id"] == id)
        .ok_or_else(|| ServiceError::NotFound(format!("No proposal `{id}`.")))?;
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
    /// A batch: every review's latest suggestion, merged into one proposal.
    Reviews(Vec<String>),
    Alert(String, Suggestion),
    Direct(Suggestion),
}

/// The bundle in force for `tenant` (else globally), or the embedded default pack.
pub async fn base_bundle(
    store: &dyn Store,
    tenant: Option<&str>,
) -> Result<(Option<String>, Bundle), ServiceError> {
    let acts = store.policy_activations().await?;
    let version = tenant
        .and_then(|t| acts.iter().find(|a| a.scope == t))
        .or_else(|| acts.iter().find(|a| a.scope == GLOBAL_SCOPE))
        .map(|a| a.version.clone());
    if let Some(v) = version {
        if let Some(p) = store.policy_bundle(&v).await? {
            let b = bundle_from_payload(&p)?;
            return Ok((Some(v), b));
        }
    }
    Ok((None, Bundle::from_files(&keel_policy::default_pack_files())))
}

/// A review item's latest suggestion (scoped to the reviewed segment when it names no scope),
/// its provenance and the default reason.
async fn review_suggestion(
    store: &dyn Store,
    item_id: &str,
    tenant_key: Option<&str>,
) -> Result<(Suggestion, Value, String), ServiceError> {
    let item = store
        .review_item(item_id)
        .await?
        .filter(|i| tenant_key.is_none_or(|t| t == i.tenant))
        .ok_or_else(|| ServiceError::NotFound(format!("No review item `{item_id}`.")))?;
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
    Ok((
        s,
        json!({"review": item_id, "interaction": item.interaction_id,
               "verdict": label.payload["verdict"], "reviewer": label.actor}),
        why,
    ))
}

/// Roles that draft proposals.
pub const AUTHORS: &[Role] = &[Role::Reviewer, Role::Admin];

/// Drafts a proposal and appends its `ProposalCreated` event (reviewers and admins). An actor
/// scoped to one tenant proposes only for it: the suggestion is then confined to its tenant.
pub async fn create_proposal(
    store: &dyn Store,
    clock: &dyn Clock,
    source: ProposalSource,
    reason: Option<&str>,
    tenant: Option<&str>,
    actor: &Actor,
    id: String,
) -> Result<Value, ServiceError> {
    actor.require(AUTHORS)?;
    if let Some(t) = tenant {
        keel_core::auth::validate_tenant(t)
            .map_err(|e| ServiceError::bad_param("tenant", e.to_string()))?;
        if !actor.sees(t) {
            return Err(ServiceError::Forbidden(format!(
                "this key cannot propose changes for tenant {t}"
            )));
        }
    }
    let tenant_key = actor.tenant_filter();
    let mut batch: Vec<(Suggestion, Value)> = Vec::new();
    let (suggestion, source_doc, default_reason) = match &source {
        ProposalSource::Review(item_id) => review_suggestion(store, item_id, tenant_key).await?,
        ProposalSource::Reviews(ids) => {
            if ids.is_empty() || ids.len() > 100 {
                return Err(ServiceError::bad_param(
                    "from_reviews",
                    "give between 1 and 100 review item ids",
                ));
            }
            for item_id in ids {
                let (s, src, _) = review_suggestion(store, item_id, tenant_key).await?;
                batch.push((s, src));
            }
            let (first, src) = batch.remove(0);
            (first, src, format!("reviews {}", ids.join(", ")))
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
                .ok_or_else(|| ServiceError::NotFound(format!("No alert `{alert_id}`.")))?;
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
        return Err(ServiceError::bad_param(
            "reason",
            "a proposal needs a reason",
        ));
    }
    let is_batch = matches!(source, ProposalSource::Reviews(_));
    batch.insert(0, (suggestion, source_doc.clone()));
    // A tenant key proposes for its own tenant only.
    if let Some(t) = tenant_key {
        for (suggestion, _) in &mut batch {
            let sc = suggestion.scope.get_or_insert_with(Default::default);
            if sc.tenants.is_empty() {
                sc.tenants = vec![t.to_string()];
            } else if sc.tenants.iter().any(|x| x != t) {
                return Err(ServiceError::Forbidden(format!(
                    "a key of tenant {t} can only propose changes scoped to `tenants: [{t}]`"
                )));
            }
        }
    }
    let merged = keel_loop::update::batch::merge(batch);
    let scope_tenant = |s: &Suggestion| {
        s.scope.as_ref().and_then(|s| match s.tenants.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        })
    };
    let first_tenant = merged.first().and_then(|m| scope_tenant(&m.suggestion));
    if let Some(m) = merged
        .iter()
        .find(|m| scope_tenant(&m.suggestion) != first_tenant)
    {
        return Err(unprocessable(format!(
            "a batch drafts one proposal for one tenant: {} is scoped to {}, the first to {}",
            m.sources[0],
            scope_tenant(&m.suggestion)
                .as_deref()
                .unwrap_or("every tenant"),
            first_tenant.as_deref().unwrap_or("every tenant")
        )));
    }
    let tenant = tenant
        .map(str::to_string)
        .or(first_tenant)
        .or(tenant_key.map(str::to_string))
        .unwrap_or_else(|| GLOBAL_SCOPE.to_string());
    let suggestions: Vec<Suggestion> = merged.iter().map(|m| m.suggestion.clone()).collect();
    let facts_n = suggestions
        .iter()
        .filter(|s| s.kind == keel_loop::review::SuggestionKind::FactUpdate)
        .count();
    if facts_n != 0 && facts_n != suggestions.len() {
        return Err(unprocessable(
            "a batch mixes fact updates and policy changes; propose them separately",
        ));
    }
    let touches: Vec<Touch> = suggestions.iter().filter_map(batch::touch).collect();
    refuse_conflicts(store, &id, &touches).await?;
    let suggestion = suggestions[0].clone();
    let now = clock.now_ms();
    let source_doc = if is_batch {
        json!({"reviews": merged.iter().flat_map(|m| m.sources.iter().map(|s| s["review"].clone())).collect::<Vec<_>>(),
               "merged": merged})
    } else {
        source_doc
    };
    let mut doc = json!({
        "id": id, "status": "pending", "author": actor.who, "author_name": actor.person,
        "reason": reason, "created_ms": now, "source": source_doc, "suggestion": suggestion,
        "touches": touches,
    });
    if is_batch {
        doc["suggestions"] = json!(suggestions);
    }
    doc["source"]["suggestion_kind"] = json!(suggestion.kind);
    if facts_n > 0 {
        let existing: Vec<keel_policy::Fact> = crate::facts::load(store, None)
            .await?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let (facts, diff) = batch::draft_facts(&suggestions, &existing)
            .map_err(|e| unprocessable(e.to_string()))?;
        doc["kind"] = json!("fact");
        doc["fact"] = json!(facts[0]);
        if is_batch {
            doc["facts"] = json!(facts);
        }
        doc["diff"] = json!(diff);
    } else {
        let scope_tenant = (tenant != GLOBAL_SCOPE).then_some(tenant.as_str());
        let (base_version, base) = base_bundle(store, scope_tenant).await?;
        let (draft, rules) = batch::draft_policies(&base, &suggestions, &id, &reason)
            .map_err(|e| unprocessable(e.to_string()))?;
        doc["kind"] = json!("policy");
        doc["base_version"] = json!(base_version);
        doc["candidate_version"] = json!(draft.version);
        doc["rule"] = json!(draft.rule_id);
        if is_batch {
            doc["rules"] = json!(rules);
        }
        doc["diff"] = json!(draft.diff);
        let files: serde_json::Map<String, Value> = draft
            .bundle
            .files()
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        doc["files"] = Value::Object(files);
    }
    let ev = proposal::created_event(doc, &tenant, &actor.who, now);
    store.append(vec![ev]).await?;
    proposal_by_id(store, &id, false).await
}

/// What a stored proposal touches (its `touches`, else derived from its suggestion).
fn touches_of(doc: &Value) -> Vec<Touch> {
    if let Ok(t) = serde_json::from_value::<Vec<Touch>>(doc["touches"].clone()) {
        return t;
    }
    serde_json::from_value::<Suggestion>(doc["suggestion"].clone())
        .ok()
        .and_then(|s| batch::touch(&s))
        .into_iter()
        .collect()
}

/// Refuses (409, naming both) a change that touches the same rule term or fact key as a live
/// canary's proposal in an overlapping scope.
async fn refuse_conflicts(store: &dyn Store, id: &str, mine: &[Touch]) -> Result<(), ServiceError> {
    let live: Vec<(String, String)> = store
        .rollouts()
        .await?
        .into_iter()
        .filter(|r| r.state == "canary")
        .filter_map(|r| r.proposal.map(|p| (r.id, p)))
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    let docs = load_proposals(store).await?;
    for (ro, pid) in live {
        let Some(doc) = docs.iter().find(|d| d["id"] == pid.as_str()) else {
            continue;
        };
        let theirs = touches_of(doc);
        if let Some((a, _)) = batch::collision(mine, &theirs) {
            return Err(ServiceError::Conflict(format!(
                "proposal {id} changes {} `{}`, which live rollout {ro} (proposal {pid}) also \
                 changes in an overlapping scope; promote or roll back {ro} first",
                a.what, a.key
            )));
        }
    }
    Ok(())
}

/// The fact versions a fact proposal sets (`facts`, else its one `fact`).
pub fn proposal_facts(doc: &Value) -> Result<Vec<keel_policy::Fact>, ServiceError> {
    if doc["facts"].is_array() {
        return Ok(serde_json::from_value(doc["facts"].clone())?);
    }
    Ok(vec![serde_json::from_value(doc["fact"].clone())?])
}

/// Approves a proposal: a policy proposal publishes its candidate (not activated), a fact
/// proposal starts its fact canary at the plan's first step (the fact is set when the canary
/// is promoted; a plan without canary steps sets it at once); with the two-person rule the
/// approver must be another person. A tenant's admin approves only its own tenant's facts.
pub async fn approve_proposal(
    store: &dyn Store,
    clock: &dyn Clock,
    cfg: &UpdateConfig,
    plans: &RolloutsConfig,
    id: &str,
    reason: &str,
    actor: &Actor,
) -> Result<Value, ServiceError> {
    let doc = proposal_by_id(store, id, true).await?;
    let status = doc["status"].as_str().unwrap_or("pending");
    let author = doc["author_name"].as_str().unwrap_or_default();
    match check_approval(status, author, &actor.person, cfg.two_person_rule) {
        Ok(()) => {}
        Err(Refusal::NotPending(s)) => {
            return Err(ServiceError::Conflict(format!(
                "proposal `{id}` is already {s}"
            )))
        }
        Err(Refusal::SamePerson) => {
            return Err(ServiceError::Forbidden(format!(
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
    let mut rollout_events = Vec::new();
    let mut version = None;
    if doc["kind"] == "fact" {
        let facts = proposal_facts(&doc)?;
        // A tenant's admin writes only its own tenant's facts (never a global or another
        // tenant's one), as `facts::set` does.
        let owner = facts
            .first()
            .map(keel_loop::facts::fact_tenant)
            .unwrap_or(GLOBAL_SCOPE)
            .to_string();
        let owner = owner.as_str();
        for fact in &facts {
            let own = keel_loop::facts::fact_tenant(fact);
            if actor.tenant_filter().is_some() && (own == GLOBAL_SCOPE || !actor.sees(own)) {
                return Err(ServiceError::Forbidden(format!(
                    "fact `{}` is scoped to {}; a key of tenant {} approves only facts scoped \
                     to `tenants: [{}]`",
                    fact.key,
                    if own == GLOBAL_SCOPE {
                        "every tenant"
                    } else {
                        own
                    },
                    actor.tenant,
                    actor.tenant
                )));
            }
        }
        let existing: Vec<keel_policy::Fact> = crate::facts::load(store, None)
            .await?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let scope_tenant = (owner != GLOBAL_SCOPE).then(|| owner.to_string());
        let plan = plans.plan_for(scope_tenant.as_deref(), cfg);
        let first = plan.steps.first().copied().unwrap_or(100.0);
        if first >= 100.0 {
            // A plan without canary steps: the fact is set at once.
            let mut evs =
                keel_loop::facts::fact_set_events(&facts, &existing, &why, &actor.who, now)
                    .map_err(|e| unprocessable(e.to_string()))?;
            for e in &mut evs {
                e.payload["proposal"] = json!(id);
            }
            events.extend(evs);
        } else {
            // Checked now, set at promotion: the canary arm is served the fact meanwhile.
            keel_loop::facts::fact_set_events(&facts, &existing, &why, &actor.who, now)
                .map_err(|e| unprocessable(e.to_string()))?;
            let live: Vec<keel_loop::update::rollout::Rollout> = store
                .rollouts()
                .await?
                .iter()
                .filter(|r| r.state == "canary")
                .map(crate::rollouts::rollout_of)
                .collect();
            let refs: Vec<&keel_loop::update::rollout::Rollout> = live.iter().collect();
            let version = format!("{FACT_VERSION_PREFIX}{id}");
            let evs = keel_loop::update::rollout::start(
                &keel_loop::update::rollout::Start {
                    id: &format!("ro_{}", id.trim_start_matches("pr_")),
                    version: &version,
                    baseline: None,
                    percent: first,
                    scope: RolloutScope {
                        tenant: scope_tenant,
                        locale: None,
                    },
                    reason: &format!("fact canary for {why}"),
                    proposal: Some(id),
                },
                &refs,
                &actor.who,
                now,
            )?;
            rollout_events = evs;
        }
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
        let policy = Policy::compile(&bundle)?;
        let v = policy.version().to_string();
        if !store
            .policy_versions()
            .await?
            .iter()
            .any(|x| x.version == v)
        {
            let mut ev = published_event(&bundle, &policy, &why, &actor.who, now)
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
            &actor.who,
            now,
        )
        .map_err(|e| ServiceError::bad_param("reason", e.to_string()))?,
    );
    let started = rollout_events
        .first()
        .and_then(|e| keel_loop::update::rollout::Rollout::from_payload(&e.payload));
    events.extend(rollout_events);
    append_guarded(store, events).await?;
    let mut out = proposal_by_id(store, id, false).await?;
    if let Some(r) = started {
        out["rollout"] = json!({"id": r.id, "state": r.state, "percent": r.percent});
    }
    Ok(out)
}

/// Rejects a pending proposal.
pub async fn reject_proposal(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    reason: &str,
    actor: &Actor,
) -> Result<Value, ServiceError> {
    let doc = proposal_by_id(store, id, false).await?;
    if doc["status"] != "pending" {
        return Err(ServiceError::Conflict(format!(
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
        &actor.who,
        clock.now_ms(),
    )
    .map_err(|e| ServiceError::bad_param("reason", e.to_string()))?;
    append_guarded(store, vec![ev]).await?;
    proposal_by_id(store, id, false).await
}
