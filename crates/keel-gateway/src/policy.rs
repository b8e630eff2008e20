//! The active policies at runtime: one compiled `Arc<Policy>` per scope, swapped atomically.
//! A request takes the `Arc` once and finishes on that version, whatever is activated meanwhile.
//! Every compiled policy consults one shared facts checker, whose index is rebuilt when a
//! `FactSet` event arrives; which version of a fact is in force is decided per request by the
//! request's time (the injected clock), so a scheduled change needs no reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use keel_loop::update::{bundle_from_payload, GLOBAL_SCOPE};
use keel_policy::{Policy, SharedFacts};
use keel_store::Store;

use crate::error::GatewayError;

#[derive(Default)]
struct Active {
    global: Option<Arc<Policy>>,
    tenants: HashMap<String, Arc<Policy>>,
    /// Sum of activation sequence numbers seen (changes whenever any activation changes).
    fingerprint: i64,
}

/// The policy each tenant is served with.
pub struct PolicyRuntime {
    default: Arc<Policy>,
    active: RwLock<Arc<Active>>,
    compiled: Mutex<HashMap<String, Arc<Policy>>>,
    facts: Arc<SharedFacts>,
    learned: Arc<crate::learn::Learned>,
    /// (count, last seq) of the `FactSet` events the index was built from.
    facts_seen: Mutex<(i64, i64)>,
}

impl PolicyRuntime {
    /// Starts with the embedded default pack active. Every compiled policy reads
    /// `signals.learned` from `learned`.
    pub fn new(learned: Arc<crate::learn::Learned>) -> Result<Self, GatewayError> {
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

    /// The policy for `tenant`: its own activation, else the global one, else the default pack.
    pub fn for_tenant(&self, tenant: &str) -> Arc<Policy> {
        let active = match self.active.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        };
        active
            .tenants
            .get(tenant)
            .or(active.global.as_ref())
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }

    fn compiled(&self, version: &str) -> Option<Arc<Policy>> {
        self.compiled.lock().ok()?.get(version).cloned()
    }

    /// Reloads activations from the store (cheap when nothing changed). Bundles are compiled
    /// once per version; a bundle that fails to compile keeps the previous policy in force.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), GatewayError> {
        let rows = store.policy_activations().await?;
        let fingerprint: i64 = rows.iter().map(|r| r.seq).sum();
        let current = self.active.read().map(|a| a.fingerprint).unwrap_or(-1);
        if fingerprint == current {
            return Ok(());
        }
        let mut next = Active {
            fingerprint,
            ..Active::default()
        };
        for row in rows {
            let policy = match self.compiled(&row.version) {
                Some(p) => p,
                None => {
                    let Some(payload) = store.policy_bundle(&row.version).await? else {
                        tracing::error!(version = %row.version, "activated policy version is not published");
                        continue;
                    };
                    let compiled = bundle_from_payload(&payload)
                        .map_err(|e| GatewayError::Internal(e.to_string()))
                        .and_then(|b| {
                            Policy::compile(&b).map_err(|e| GatewayError::Internal(e.to_string()))
                        })
                        .map(|mut p| {
                            p.set_fact_checker(self.facts.clone());
                            p.set_learned_scorer(self.learned.clone());
                            p
                        });
                    match compiled {
                        Ok(p) => {
                            let p = Arc::new(p);
                            if let Ok(mut c) = self.compiled.lock() {
                                c.insert(row.version.clone(), p.clone());
                            }
                            p
                        }
                        Err(e) => {
                            tracing::error!(version = %row.version, error = %e, "policy failed to compile; keeping the previous one");
                            continue;
                        }
                    }
                }
            };
            if row.scope == GLOBAL_SCOPE {
                next.global = Some(policy);
            } else {
                next.tenants.insert(row.scope, policy);
            }
        }
        if let Ok(mut a) = self.active.write() {
            *a = Arc::new(next);
        }
        tracing::info!("policy activations reloaded");
        Ok(())
    }
}
