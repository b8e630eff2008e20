//! Backtests: recorded interactions replayed through a candidate bundle (a proposal's or a
//! published version's) with the facts registry plugged in, or the version in force with a
//! fact proposal's version added to the registry. The replay is
//! `keel_loop::update::backtest`.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_loop::review::kinds;
use keel_loop::update::backtest::{self, BacktestReport, Known};
use keel_loop::update::bundle_from_payload;
use keel_policy::{Bundle, Policy, SharedFacts};
use keel_store::Store;
use serde_json::Value;

use crate::actor::{Actor, ADMIN};
use crate::error::{unprocessable, ServiceError};
use crate::proposals::proposal_by_id;
use crate::rollouts::resolve_version;

/// Compiles a bundle with the facts registry plugged in (as the gateway would serve it).
pub async fn compile_candidate(
    store: &dyn Store,
    bundle: &Bundle,
    facts: Option<Arc<SharedFacts>>,
) -> Result<Policy, ServiceError> {
    let mut p = Policy::compile(bundle)?;
    let facts = match facts {
        Some(f) => f,
        None => {
            let all: Vec<_> = crate::facts::load(store, None)
                .await?
                .into_iter()
                .map(|(_, f)| f)
                .collect();
            let index = keel_loop::facts::index(all)?;
            let shared = SharedFacts::new();
            shared.set(Arc::new(index));
            Arc::new(shared)
        }
    };
    p.set_fact_checker(facts);
    Ok(p)
}

/// The fact version a fact proposal would set (`None`: not a fact proposal).
async fn fact_of_proposal(
    store: &dyn Store,
    proposal: Option<&str>,
) -> Result<Option<Vec<keel_policy::Fact>>, ServiceError> {
    let Some(id) = proposal else { return Ok(None) };
    let doc = proposal_by_id(store, id, false).await?;
    if doc["kind"] != "fact" {
        return Ok(None);
    }
    Ok(Some(crate::proposals::proposal_facts(&doc)?))
}

/// The candidate bundle of a proposal or a published version.
pub async fn candidate_bundle(
    store: &dyn Store,
    proposal: Option<&str>,
    version: Option<&str>,
) -> Result<Bundle, ServiceError> {
    if let Some(id) = proposal {
        let doc = proposal_by_id(store, id, true).await?;
        if doc["kind"] != "policy" {
            return Err(unprocessable(format!(
                "proposal `{id}` changes a fact; backtest a policy proposal"
            )));
        }
        return bundle_from_payload(&doc).map_err(ServiceError::from);
    }
    let Some(v) = version else {
        return Err(ServiceError::bad_param(
            "proposal",
            "give a `proposal` or a `version`",
        ));
    };
    let v = resolve_version(store, v).await?;
    let payload = store
        .policy_bundle(&v)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("No published policy version `{v}`.")))?;
    bundle_from_payload(&payload).map_err(ServiceError::from)
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
) -> Result<BacktestReport, ServiceError> {
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
    let (_, base_bundle) = crate::proposals::base_bundle(store, tenant).await?;
    let base = compile_candidate(store, &base_bundle, None).await?;
    Ok(backtest::compare(&base, candidate, &records, &known, 20))
}

const WEEK_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A backtest an actor asks for: exactly one of `proposal` or `version`.
#[derive(Debug, Clone, Default)]
pub struct BacktestRequest {
    pub proposal: Option<String>,
    pub version: Option<String>,
    /// Only this tenant's interactions (an actor scoped to one tenant: its own).
    pub tenant: Option<String>,
    /// Default: a week before `now_ms`.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Default 10 000, at most 100 000.
    pub limit: Option<usize>,
}

/// Replays recorded interactions through a proposal's or a published version's bundle
/// (admins), with `facts` as the checker (else the registry as stored). Returns the report
/// and the start of the window replayed.
pub async fn backtest(
    store: &dyn Store,
    actor: &Actor,
    req: &BacktestRequest,
    facts: Option<Arc<SharedFacts>>,
    now_ms: i64,
) -> Result<(BacktestReport, i64), ServiceError> {
    actor.require(ADMIN)?;
    if req.proposal.is_some() == req.version.is_some() {
        return Err(ServiceError::bad_param(
            "proposal",
            "give exactly one of `proposal` or `version`",
        ));
    }
    let tenant = match (&req.tenant, actor.tenant_filter()) {
        (Some(t), _) if !actor.sees(t) => {
            return Err(ServiceError::Forbidden(format!(
                "this key cannot read tenant {t}"
            )))
        }
        (Some(t), _) => Some(t.as_str()),
        (None, own) => own,
    };
    let since = req.since_ms.unwrap_or(now_ms - WEEK_MS);
    let until = req.until_ms.unwrap_or(i64::MAX);
    let limit = req.limit.unwrap_or(10_000).clamp(1, 100_000);
    if let Some(fact) = fact_of_proposal(store, req.proposal.as_deref()).await? {
        // A fact proposal: the version in force, with the registry plus the proposed fact —
        // which recorded replies the new value would correct.
        let (_, base) = crate::proposals::base_bundle(store, tenant).await?;
        let mut all: Vec<_> = crate::facts::load(store, None)
            .await?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        all.extend(fact);
        let shared = SharedFacts::new();
        shared.set(Arc::new(keel_loop::facts::index(all)?));
        let candidate = compile_candidate(store, &base, Some(Arc::new(shared))).await?;
        let report = run_backtest(store, &candidate, tenant, since, until, limit).await?;
        return Ok((report, since));
    }
    let bundle = candidate_bundle(store, req.proposal.as_deref(), req.version.as_deref()).await?;
    let candidate = compile_candidate(store, &bundle, facts).await?;
    let report = run_backtest(store, &candidate, tenant, since, until, limit).await?;
    Ok((report, since))
}
