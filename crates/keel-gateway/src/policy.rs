//! The active policies at runtime: one compiled `Arc<Policy>` per scope, swapped atomically.
//! A request takes the `Arc` once and finishes on that version, whatever is activated meanwhile.
//! Every compiled policy consults one shared facts checker, whose index is rebuilt when a
//! `FactSet` event arrives; which version of a fact is in force is decided per request by the
//! request's time (the injected clock), so a scheduled change needs no reload.
//!
//! Rollouts overlay the activations: a live canary sends the requests whose conversation (else
//! interaction) id hashes below its percentage to the candidate and the rest to what the scope
//! is otherwise served (sticky per conversation); a locale-scoped rollout at 100 % serves its
//! version to that locale. The request records which rollout and arm served it. A fact canary
//! (a fact proposal's rollout) serves its canary arm the same versions compiled with a facts
//! index that also holds the proposed fact version; the baseline arm keeps the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use keel_loop::update::rollout::{in_canary, RolloutScope, BASELINE, CANARY, FACT_VERSION_PREFIX};
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
    /// A fact canary: the canary arm is served what the baseline arm is, compiled with a facts
    /// index that holds the proposed fact version (keyed by the baseline's version).
    fact_arm: Option<HashMap<String, Arc<Policy>>>,
}

/// A fact canary's own facts index: the registry plus its proposed version.
struct FactArm {
    facts: Arc<SharedFacts>,
    proposed: Vec<keel_policy::Fact>,
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
    /// The facts indexes of live fact canaries (rebuilt with the registry).
    fact_arms: Mutex<Vec<FactArm>>,
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
            fact_arms: Mutex::new(Vec::new()),
        })
    }

    /// Rebuilds the facts index when `FactSet` events were appended since the last call.
    pub async fn refresh_facts(&self, store: &dyn Store) -> Result<(), GatewayError> {
        let seen = store.fact_fingerprint().await?;
        if self.facts_seen.lock().map(|s| *s == seen).unwrap_or(false) {
            return Ok(());
        }
        let facts = Self::registry(store).await?;
        let n = facts.len();
        let index = keel_loop::facts::index(facts.clone())
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.facts.set(Arc::new(index));
        if let Ok(arms) = self.fact_arms.lock() {
            for arm in arms.iter() {
                Self::fill_arm(arm, &facts)?;
            }
        }
        if let Ok(mut s) = self.facts_seen.lock() {
            *s = seen;
        }
        tracing::info!(versions = n, "facts reloaded");
        Ok(())
    }

    async fn registry(store: &dyn Store) -> Result<Vec<keel_policy::Fact>, GatewayError> {
        Ok(store
            .fact_events(None)
            .await?
            .iter()
            .filter_map(|r| keel_loop::facts::fact_from_value(&r.fact))
            .collect())
    }

    /// A fact canary's index: the registry with its proposed version added.
    fn fill_arm(arm: &FactArm, registry: &[keel_policy::Fact]) -> Result<(), GatewayError> {
        let mut all = registry.to_vec();
        all.extend(arm.proposed.iter().cloned());
        let index =
            keel_loop::facts::index(all).map_err(|e| GatewayError::Internal(e.to_string()))?;
        arm.facts.set(Arc::new(index));
        Ok(())
    }

    /// `versions` compiled again with the fact canary's own facts index (the default pack
    /// for a version that is not published).
    async fn compile_fact_arm(
        &self,
        store: &dyn Store,
        versions: &[String],
        facts: &Arc<SharedFacts>,
    ) -> Result<HashMap<String, Arc<Policy>>, GatewayError> {
        let mut out = HashMap::new();
        for v in versions {
            let compiled = match store.policy_bundle(v).await? {
                Some(payload) => bundle_from_payload(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|b| Policy::compile(&b).map_err(|e| e.to_string())),
                None => Policy::default_pack().map_err(|e| e.to_string()),
            };
            match compiled {
                Ok(mut p) => {
                    p.set_fact_checker(facts.clone());
                    p.set_learned_scorer(self.learned.clone());
                    out.insert(v.clone(), Arc::new(p));
                }
                Err(e) => {
                    tracing::error!(version = %v, error = %e, "fact canary: policy failed to compile")
                }
            }
        }
        Ok(out)
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
            Some(o) if o.fact_arm.is_some() => {
                let base = underlying(&covering[1..]);
                if in_canary(&o.id, key, o.percent) {
                    let with_fact = o
                        .fact_arm
                        .as_ref()
                        .and_then(|m| m.get(base.version()).cloned())
                        .unwrap_or(base);
                    (with_fact, Some((o.id.clone(), CANARY)))
                } else {
                    (base, Some((o.id.clone(), BASELINE)))
                }
            }
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

    /// The overlay of a live fact canary: every version a request of its scope may be served
    /// (the default pack, activations, locale rollouts) compiled with the registry plus the
    /// proposed fact, so only the canary arm sees the correction.
    async fn fact_overlay(
        &self,
        store: &dyn Store,
        next: &Active,
        r: &keel_store::RolloutRow,
        arms: &mut Vec<FactArm>,
    ) -> Result<Option<Overlay>, GatewayError> {
        let pid = r.proposal.as_deref().unwrap_or_default();
        let doc = match keel_service::proposals::proposal_by_id(store, pid, false).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(rollout = %r.id, error = %e, "fact canary without its proposal");
                return Ok(None);
            }
        };
        let proposed = match keel_service::proposals::proposal_facts(&doc) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(rollout = %r.id, error = %e, "fact canary: the proposal holds no fact");
                return Ok(None);
            }
        };
        let arm = FactArm {
            facts: Arc::new(SharedFacts::new()),
            proposed,
        };
        Self::fill_arm(&arm, &Self::registry(store).await?)?;
        let mut versions: Vec<String> = std::iter::once(self.default.version().to_string())
            .chain(next.global.iter().map(|p| p.version().to_string()))
            .chain(next.tenants.values().map(|p| p.version().to_string()))
            .chain(
                next.overlays
                    .iter()
                    .filter(|o| !o.canary)
                    .map(|o| o.policy.version().to_string()),
            )
            .collect();
        versions.sort();
        versions.dedup();
        let compiled = self.compile_fact_arm(store, &versions, &arm.facts).await?;
        arms.push(arm);
        Ok(Some(Overlay {
            id: r.id.clone(),
            scope: RolloutScope {
                tenant: r.tenant.clone(),
                locale: r.locale.clone(),
            },
            percent: r.percent,
            policy: self.default.clone(),
            canary: true,
            fact_arm: Some(compiled),
        }))
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
        let mut fact_arms = Vec::new();
        for r in live {
            if r.version.starts_with(FACT_VERSION_PREFIX) {
                let Some(overlay) = self.fact_overlay(store, &next, &r, &mut fact_arms).await?
                else {
                    continue;
                };
                next.overlays.push(overlay);
                continue;
            }
            let Some(policy) = self.load_version(store, &r.version).await? else {
                continue;
            };
            next.overlays.push(Overlay {
                fact_arm: None,
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
        if let Ok(mut arms) = self.fact_arms.lock() {
            *arms = fact_arms;
        }
        if let Ok(mut a) = self.active.write() {
            *a = Arc::new(next);
        }
        tracing::info!("policy activations reloaded");
        Ok(())
    }
}
