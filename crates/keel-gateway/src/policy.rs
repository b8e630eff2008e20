//! The active policies at runtime: one compiled `Arc<Policy>` per scope, swapped atomically.
//! A request takes the `Arc` once and finishes on that version, whatever is activated meanwhile.
//! Every compiled policy consults one shared facts checker, whose index is rebuilt when a
//! `FactSet` event arrives; which version of a fact is in force is decided per request by the
//! request's time (the injected clock), so a scheduled change needs no reload.
//!
//! Rollouts overlay the activations: a live canary sends the requests whose conversation (else
//! interaction) id hashes below its percentage to the candidate and the rest to what the scope
//! is otherwise served (sticky per conversation); a locale-scoped rollout at 100 % serves its
//! version to that locale. The request records which rollout and arm served it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use keel_loop::update::rollout::{in_canary, RolloutScope, BASELINE, CANARY};
use keel_loop::update::{bundle_from_payload, GLOBAL_SCOPE};
use keel_policy::{Policy, SharedFacts};
use keel_store::Store;

use crate::error::GatewayError;

#[derive(Default)]
struct Active {
    global: Option<Arc<Policy>>,
    tenants: HashMap<String, Arc<Policy>>,
    /// Live rollouts, most specific first (then newest first).
    overlays: Vec<Overlay>,
    /// Mix of activation and rollout sequence numbers seen (changes whenever any changes).
    fingerprint: i64,
}

struct Overlay {
    id: String,
    scope: RolloutScope,
    percent: f64,
    policy: Arc<Policy>,
    /// A canary (split) or a locale-scoped rollout in force at 100 %.
    canary: bool,
}

/// The rollout arm that served a request: `(rollout id, "canary" | "baseline")`.
pub type Arm = (String, &'static str);

/// The policy each tenant is served with.
pub struct PolicyRuntime {
    default: Arc<Policy>,
    active: RwLock<Arc<Active>>,
    compiled: Mutex<HashMap<String, Arc<Policy>>>,
    facts: Arc<SharedFacts>,
    learned: Arc<crate::learn::LearnedMonitor>,
    /// (count, last seq) of the `FactSet` events the index was built from.
    facts_seen: Mutex<(i64, i64)>,
}

impl PolicyRuntime {
    /// Starts with the embedded default pack active. Every compiled policy reads
    /// `signals.learned` from `learned`.
    pub fn new(learned: Arc<crate::learn::LearnedMonitor>) -> Result<Self, GatewayError> {
        let mut default = Policy::default_pack()
            .map_err(|e| GatewayError::Config(format!("the embedded default policy pack: {e}")))?;
        let facts = Arc::new(SharedFacts::new());
        default.set_fact_checker(facts.clone());
        default.set_learned_scorer(learned.clone());
        Ok(Self {
            learned,
            default: Arc::new(default),
            active: RwLock::new(Arc::new(Active::default())),
            compiled: Mutex::new(HashMap::new()),
            facts,
            facts_seen: Mutex::new((0, 0)),
        })
    }

    /// Rebuilds the facts index when `FactSet` events were appended since the last call.
    pub async fn refresh_facts(&self, store: &dyn Store) -> Result<(), GatewayError> {
        let seen = store.fact_fingerprint().await?;
        if self.facts_seen.lock().map(|s| *s == seen).unwrap_or(false) {
            return Ok(());
        }
        let rows = store.fact_events(None).await?;
        let facts: Vec<_> = rows
            .iter()
            .filter_map(|r| keel_loop::facts::fact_from_value(&r.fact))
            .collect();
        let n = facts.len();
        let index =
            keel_loop::facts::index(facts).map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.facts.set(Arc::new(index));
        if let Ok(mut s) = self.facts_seen.lock() {
            *s = seen;
        }
        tracing::info!(versions = n, "facts reloaded");
        Ok(())
    }

    fn snapshot(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The policy for `tenant`: its own activation, else the global one, else the default pack.
    pub fn for_tenant(&self, tenant: &str) -> Arc<Policy> {
        let active = self.snapshot();
        Self::activated(&active, tenant).unwrap_or_else(|| self.default.clone())
    }

    fn activated(active: &Active, tenant: &str) -> Option<Arc<Policy>> {
        active
            .tenants
            .get(tenant)
            .or(active.global.as_ref())
            .cloned()
    }

    /// The policy for one request, with the rollout arm that chose it. `key` is the
    /// conversation id (else the interaction id): the split is sticky per key.
    pub fn for_request(
        &self,
        tenant: &str,
        locale: Option<&str>,
        key: &str,
    ) -> (Arc<Policy>, Option<Arm>) {
        let active = self.snapshot();
        let covering: Vec<&Overlay> = active
            .overlays
            .iter()
            .filter(|o| o.scope.covers(tenant, locale))
            .collect();
        // What the scope is served without the first covering canary.
        let underlying = |rest: &[&Overlay]| {
            rest.iter()
                .find(|o| !o.canary)
                .map(|o| o.policy.clone())
                .or_else(|| Self::activated(&active, tenant))
                .unwrap_or_else(|| self.default.clone())
        };
        match covering.first() {
            None => (underlying(&[]), None),
            Some(o) if !o.canary => (o.policy.clone(), None),
            Some(o) => {
                if in_canary(&o.id, key, o.percent) {
                    (o.policy.clone(), Some((o.id.clone(), CANARY)))
                } else {
                    (underlying(&covering[1..]), Some((o.id.clone(), BASELINE)))
                }
            }
        }
    }

    fn compiled(&self, version: &str) -> Option<Arc<Policy>> {
        self.compiled.lock().ok()?.get(version).cloned()
    }

    /// The compiled policy of a published version (compiled once per version; `None` if it is
    /// not published or does not compile).
    async fn load_version(
        &self,
        store: &dyn Store,
        version: &str,
    ) -> Result<Option<Arc<Policy>>, GatewayError> {
        if let Some(p) = self.compiled(version) {
            return Ok(Some(p));
        }
        let Some(payload) = store.policy_bundle(version).await? else {
            tracing::error!(version = %version, "policy version in force is not published");
            return Ok(None);
        };
        let compiled = bundle_from_payload(&payload)
            .map_err(|e| GatewayError::Internal(e.to_string()))
            .and_then(|b| Policy::compile(&b).map_err(|e| GatewayError::Internal(e.to_string())))
            .map(|mut p| {
                p.set_fact_checker(self.facts.clone());
                p.set_learned_scorer(self.learned.clone());
                p
            });
        match compiled {
            Ok(p) => {
                let p = Arc::new(p);
                if let Ok(mut c) = self.compiled.lock() {
                    c.insert(version.to_string(), p.clone());
                }
                Ok(Some(p))
            }
            Err(e) => {
                tracing::error!(version = %version, error = %e, "policy failed to compile; keeping the previous one");
                Ok(None)
            }
        }
    }

    /// The shared facts checker (for compiling candidates the same way, e.g. in backtests).
    pub fn fact_checker(&self) -> Arc<SharedFacts> {
        self.facts.clone()
    }

    /// Reloads activations and rollouts from the store (cheap when nothing changed). A bundle
    /// that fails to compile keeps the previous policy in force.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), GatewayError> {
        let rows = store.policy_activations().await?;
        let rollouts = store.rollouts().await?;
        let live: Vec<_> = rollouts
            .into_iter()
            .filter(|r| {
                r.state == "canary"
                    || (r.locale.is_some() && (r.state == "active" || r.state == "promoted"))
            })
            .collect();
        let fingerprint: i64 = rows
            .iter()
            .map(|r| r.seq)
            .chain(live.iter().map(|r| r.updated_seq.wrapping_mul(7919)))
            .fold(rows.len() as i64, |acc, s| {
                acc.wrapping_mul(31).wrapping_add(s)
            });
        let current = self.active.read().map(|a| a.fingerprint).unwrap_or(-1);
        if fingerprint == current {
            return Ok(());
        }
        let mut next = Active {
            fingerprint,
            ..Active::default()
        };
        for row in rows {
            let Some(policy) = self.load_version(store, &row.version).await? else {
                continue;
            };
            if row.scope == GLOBAL_SCOPE {
                next.global = Some(policy);
            } else {
                next.tenants.insert(row.scope, policy);
            }
        }
        for r in live {
            let Some(policy) = self.load_version(store, &r.version).await? else {
                continue;
            };
            next.overlays.push(Overlay {
                canary: r.state == "canary",
                id: r.id,
                scope: RolloutScope {
                    tenant: r.tenant,
                    locale: r.locale,
                },
                percent: r.percent,
                policy,
            });
        }
        // Most specific first; `rollouts()` is oldest first, so reverse before a stable sort.
        next.overlays.reverse();
        next.overlays
            .sort_by_key(|o| std::cmp::Reverse(o.scope.specificity()));
        if let Ok(mut a) = self.active.write() {
            *a = Arc::new(next);
        }
        tracing::info!("policy activations reloaded");
        Ok(())
    }
}
