//! The runner: one scenario × variant × strategy through the real gateway.
//!
//! Setup (in-process): the scenario model on 127.0.0.1, a config with `[sim] manual_clock`, the
//! SQLite store in the run's directory, API keys appended as key events (as `keel keys create`
//! does). From then on every action goes over HTTP: the simulated clients through `/v1`, the
//! simulated operator, reviewers and the clock through `/api`. Per tick: set the clock, publish
//! announced updates due, send the tick's conversations, wait at the barrier, then read alerts
//! and work the review queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use keel_core::auth::mint_key;
use keel_core::{Clock, ManualClock, Role};
use keel_gateway::{Config, ServeHandle};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::metrics::{self, Alert, Served, TickStats};
use crate::model::{ModelIndex, ModelServer};
use crate::scenario::Scenario;
use crate::traffic;
use crate::SimError;

mod client;
mod humans;
mod operator;
mod setup;

use client::{Client, Keys, TimeControl};
use humans::{converse, humans, ConvEnv, ConvOutcome, Staff};
use operator::{publish, read_alerts};
use setup::sim_config;

/// What Keel does around the frozen model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// No Keel loop and no updates: the frozen model left alone (default policy pack only).
    Static,
    /// Monitors and alerts; announced updates published on their dates.
    Monitor,
    /// Monitor plus the full loop: reviewers, proposals, backtests, canaries, promotion.
    Continual,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Static, Strategy::Monitor, Strategy::Continual];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Static => "static",
            Strategy::Monitor => "monitor",
            Strategy::Continual => "continual",
        }
    }

    /// Parses `static,monitor` (comma lists allowed).
    pub fn parse_list(s: &str) -> Result<Vec<Strategy>, SimError> {
        s.split(',')
            .map(|p| match p.trim() {
                "static" => Ok(Strategy::Static),
                "monitor" => Ok(Strategy::Monitor),
                "continual" => Ok(Strategy::Continual),
                other => Err(SimError::Usage(format!(
                    "unknown strategy `{other}` (static, monitor, continual)"
                ))),
            })
            .collect()
    }
}

/// Whether the operator is told about changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Changes marked `announced` have their update published on the effective date.
    Announced,
    /// Nothing is announced: only monitoring and review can find the changes.
    Unannounced,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Announced, Variant::Unannounced];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Announced => "announced",
            Variant::Unannounced => "unannounced",
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub scenario: Scenario,
    pub variant: Variant,
    pub strategy: Strategy,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// The run's data directory (the SQLite database goes here).
    pub dir: PathBuf,
    /// A label for the sweep value, if any (`KEY=V`).
    pub sweep: Option<(String, String)>,
    /// Conversations in flight at once within a tick (results do not depend on it).
    pub concurrency: usize,
    /// Advanced once per tick.
    pub progress: Option<indicatif::ProgressBar>,
}

/// A run's result: the metrics row and its time series.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub row: metrics::Row,
    pub series: metrics::Series,
    pub interactions: u64,
    pub wall_ms: u64,
}

/// A gateway kept running after a run (`keel demo --serve`).
pub struct KeptGateway {
    pub handle: ServeHandle,
    pub model: ModelServer,
    pub admin_key: String,
    pub url: String,
}

/// Mutable state of one run.
struct RunState {
    served: Vec<Served>,
    by_id: HashMap<String, usize>,
    alerts: Vec<Alert>,
    last_alert_seq: i64,
    /// change index → mitigation time (update fully in force)
    mitigated: BTreeMap<usize, i64>,
    /// change index → time its update reached users at all (canary)
    canary: BTreeMap<usize, i64>,
    /// rules in force on top of the default pack, by change index
    rules: BTreeMap<usize, (Vec<Value>, Vec<Value>)>,
    /// suggestions the operator already acted on (canonical JSON → change)
    acted: HashMap<String, usize>,
    /// rollout id → the changes it fixes, for canaries in flight
    rollouts: HashMap<String, Vec<usize>>,
    /// the operator's desk: suggestions and alerts waiting for them
    op: operator::Desk,
    /// canaries promoted by a person (the simulated operator never promotes)
    manual_promotions: u64,
    /// (request time, human time) for handoffs and escalations
    to_human: Vec<(i64, Option<i64>)>,
    pending_handoffs: Vec<(String, i64, usize)>,
    reviewed: HashSet<String>,
    labels: u64,
    proposals: u64,
    ticks: Vec<TickStats>,
    notes: Vec<String>,
}

/// Runs one scenario × variant × strategy; `serve` keeps the gateway running afterwards.
pub async fn run(
    spec: &RunSpec,
    serve: bool,
) -> Result<(RunResult, Option<KeptGateway>), SimError> {
    let wall = std::time::Instant::now();
    let s = &spec.scenario;
    let seed = spec.seed.unwrap_or(s.seed);
    std::fs::create_dir_all(&spec.dir)?;
    let db = spec.dir.join("keel.db");
    for f in [
        db.clone(),
        spec.dir.join("keel.db-wal"),
        spec.dir.join("keel.db-shm"),
    ] {
        if f.exists() {
            std::fs::remove_file(f)?;
        }
    }
    let model = ModelServer::start(s, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let model_ix = Arc::new(ModelIndex::new(s));
    let shared = Arc::new(s.clone());
    let config =
        Config::from_toml_str(&sim_config(s, spec.strategy, &spec.dir, &model.base_url()))?;
    let clock = Arc::new(ManualClock::new(s.start_ms - s.tick_ms));
    let store = keel_service::open_store(&config.storage_url(), config.storage.durability).await?;
    let mint = |tenant: &str, role: Role, name: &str| {
        mint_key(
            tenant,
            role,
            Some(name.to_string()),
            "sim:setup",
            clock.as_ref(),
        )
        .map_err(|e| SimError::Gateway(e.to_string()))
    };
    let app = mint(&s.tenant, Role::App, "sim-users")?;
    let admin = mint(&s.tenant, Role::Admin, "sim-operator")?;
    let mut events = vec![app.event, admin.event];
    let mut reviewer_tokens = Vec::new();
    for i in 0..s.reviewers.count.max(1) {
        let r = mint(&s.tenant, Role::Reviewer, &format!("reviewer-{i}"))?;
        events.push(r.event);
        reviewer_tokens.push(r.token);
    }
    store.append(events).await?;
    let keys = Keys {
        app: app.token,
        admin: admin.token,
        reviewers: reviewer_tokens,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let clock_dyn: Arc<dyn Clock> = clock.clone();
    let handle = keel_gateway::serve(config, store, clock_dyn, Some(listener)).await?;
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?,
        base: format!("http://{}", handle.addr),
    };
    let time = TimeControl;
    let mut st = RunState {
        served: Vec::new(),
        by_id: HashMap::new(),
        alerts: Vec::new(),
        last_alert_seq: 0,
        mitigated: BTreeMap::new(),
        canary: BTreeMap::new(),
        rules: BTreeMap::new(),
        acted: HashMap::new(),
        rollouts: HashMap::new(),
        op: operator::Desk::default(),
        manual_promotions: 0,
        to_human: Vec::new(),
        pending_handoffs: Vec::new(),
        reviewed: HashSet::new(),
        labels: 0,
        proposals: 0,
        ticks: Vec::new(),
        notes: Vec::new(),
    };
    let keys = Arc::new(keys);
    let run = Drive {
        spec,
        seed,
        c: &client,
        keys: &keys,
        time: &time,
        model: &model_ix,
        shared: &shared,
    };
    let result = drive(&run, &mut st).await;
    let outcome = match result {
        Ok(()) => {
            let end_ms = s.start_ms + s.ticks() as i64 * s.tick_ms;
            let seen = metrics::Observed {
                served: &st.served,
                alerts: &st.alerts,
                mitigated: &st.mitigated,
                canary: &st.canary,
                to_human: &st.to_human,
                labels: st.labels,
                end_ms,
                ticks: &st.ticks,
                manual_promotions: st.manual_promotions,
            };
            let (row, series) = metrics::compute(
                s,
                spec.variant,
                spec.strategy,
                seen,
                spec.sweep.clone(),
                st.notes.clone(),
            );
            Ok(RunResult {
                row,
                series,
                interactions: st.served.len() as u64,
                wall_ms: wall.elapsed().as_millis() as u64,
            })
        }
        Err(e) => Err(e),
    };
    if serve {
        let result = outcome?;
        let url = client.base.clone();
        return Ok((
            result,
            Some(KeptGateway {
                handle,
                model,
                admin_key: keys.admin.clone(),
                url,
            }),
        ));
    }
    let _ = handle.shutdown().await;
    drop(model);
    Ok((outcome?, None))
}

/// What driving one run reads: its spec and seed, the HTTP client and keys, the clock
/// control, the model's index and the scenario shared with the client tasks.
struct Drive<'a> {
    spec: &'a RunSpec,
    seed: u64,
    c: &'a Client,
    keys: &'a Arc<Keys>,
    time: &'a TimeControl,
    model: &'a Arc<ModelIndex>,
    shared: &'a Arc<Scenario>,
}

async fn drive(run: &Drive<'_>, st: &mut RunState) -> Result<(), SimError> {
    let Drive {
        spec,
        seed,
        c,
        keys,
        time,
        model,
        shared,
    } = *run;
    let s = &spec.scenario;
    let monitors = spec.strategy != Strategy::Static;
    time.set(c, &keys.admin, s.start_ms).await?;
    if !s.facts.is_empty() {
        c.ok(
            Method::POST,
            "/api/facts",
            &keys.admin,
            Some(
                &json!({"facts": crate::update::tenant_facts(&s.facts, &s.tenant),
                         "reason": "scenario: facts at the model's cut-off"}),
            ),
        )
        .await?;
    }
    let update_api = monitors
        && c.call(Method::GET, "/api/proposals", &keys.admin, None)
            .await?
            .0
            != StatusCode::NOT_FOUND;
    if spec.strategy == Strategy::Continual && !update_api {
        st.notes.push(
            "no update pipeline API: the operator publishes reviewers' suggestions directly".into(),
        );
    }
    let env = ConvEnv {
        c: c.clone(),
        keys: keys.clone(),
        s: shared.clone(),
        seed,
        model: model.clone(),
    };
    let staff = Staff {
        c,
        keys,
        spec,
        seed,
        update_api,
    };
    for tick in 0..s.ticks() {
        let now = s.start_ms + tick as i64 * s.tick_ms;
        time.set(c, &keys.admin, now).await?;
        // The operator publishes announced updates on their dates.
        if monitors && spec.variant == Variant::Announced {
            for (i, ch) in s.changes.iter().enumerate() {
                if ch.announced && ch.effective_ms <= now && !st.mitigated.contains_key(&i) {
                    publish(c, keys, s, i, st, "announced update").await?;
                    st.mitigated.insert(i, now);
                    st.canary.insert(i, now);
                }
            }
        }
        let convs = traffic::conversations(s, seed, tick);
        let mut stats = TickStats {
            tick,
            at_ms: now,
            ..TickStats::default()
        };
        let outcomes: Vec<Result<ConvOutcome, SimError>> =
            futures::stream::iter(convs.iter().enumerate())
                .map(|(ci, conv)| {
                    // A task per conversation: the client side uses every core.
                    let task = tokio::spawn(converse(env.clone(), conv.clone(), ci, now));
                    async move {
                        task.await
                            .map_err(|e| SimError::Gateway(format!("client task: {e}")))?
                    }
                })
                .buffered(spec.concurrency.max(1))
                .collect()
                .await;
        let mut feedback = Vec::new();
        let mut handoffs = Vec::new();
        for o in outcomes {
            let o = o?;
            feedback.extend(o.feedback);
            if let Some(h) = &o.handoff {
                handoffs.push(json!({"conversation_id": h, "event": "requested"}));
            }
            for x in o.served {
                stats.add(x.grade, !x.affected.is_empty());
                st.by_id.insert(x.id.clone(), st.served.len());
                st.served.push(x);
            }
            if let Some(conv) = o.handoff {
                st.to_human.push((now, None));
                let k = st.to_human.len() - 1;
                st.pending_handoffs.push((conv, now, k));
            }
        }
        // Users react once their replies are committed.
        time.barrier(c, &keys.admin).await?;
        let sends = feedback
            .iter()
            .map(|b| ("/v1/feedback", b))
            .chain(handoffs.iter().map(|b| ("/v1/handoffs", b)));
        let sent: Vec<Result<Value, SimError>> = futures::stream::iter(sends)
            .map(|(path, b)| c.ok(Method::POST, path, &keys.app, Some(b)))
            .buffered(spec.concurrency.max(1))
            .collect()
            .await;
        for r in sent {
            r?;
        }
        time.barrier(c, &keys.admin).await?;
        if monitors {
            read_alerts(c, keys, now, st).await?;
        }
        humans(&staff, tick, now, st).await?;
        st.ticks.push(stats);
        if let Some(p) = &spec.progress {
            p.inc(1);
        }
    }
    // Escalations nobody took over wait until the end (they count in mtth_minutes).
    let last = s.start_ms + (s.ticks() as i64 - 1) * s.tick_ms;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/reviews?status=open&source=escalation&limit=500".to_string();
        if let Some(cur) = &cursor {
            path.push_str(&format!("&cursor={cur}"));
        }
        let v = c.ok(Method::GET, &path, &keys.admin, None).await?;
        for item in v["data"].as_array().into_iter().flatten() {
            st.to_human
                .push((last - item["age_ms"].as_i64().unwrap_or(0), None));
        }
        match v["next_cursor"].as_str() {
            Some(n) if !n.is_empty() => cursor = Some(n.to_string()),
            _ => break,
        }
    }
    Ok(())
}

/// What to run: scenarios × variants × strategies (× sweep values).
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenarios: Vec<Scenario>,
    pub variants: Vec<Variant>,
    pub strategies: Vec<Strategy>,
    pub seed: Option<u64>,
    pub out: PathBuf,
    /// `KEY` and its values.
    pub sweep: Option<(String, Vec<String>)>,
    pub concurrency: usize,
    /// Runs in flight at once.
    pub parallel: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Plan {
    /// Every run of the plan, in report order.
    pub fn specs(&self) -> Result<Vec<RunSpec>, SimError> {
        let mut out = Vec::new();
        for sc in &self.scenarios {
            let points: Vec<Option<(String, String)>> = match &self.sweep {
                None => vec![None],
                Some((k, vs)) => vs.iter().map(|v| Some((k.clone(), v.clone()))).collect(),
            };
            for point in points {
                let mut scenario = sc.clone();
                if let Some((k, v)) = &point {
                    scenario.set(k, v)?;
                }
                for variant in &self.variants {
                    for strategy in &self.strategies {
                        let mut name = format!(
                            "{}-{}-{}",
                            scenario.name,
                            variant.as_str(),
                            strategy.as_str()
                        );
                        if let Some((k, v)) = &point {
                            name.push_str(&format!("-{k}-{v}"));
                        }
                        out.push(RunSpec {
                            scenario: scenario.clone(),
                            variant: *variant,
                            strategy: *strategy,
                            seed: self.seed,
                            dir: self.out.join("runs").join(name),
                            sweep: point.clone(),
                            concurrency: self.concurrency,
                            progress: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Runs a plan; with `serve_last`, the last run's gateway is kept running and returned.
pub async fn simulate(
    plan: &Plan,
    serve_last: bool,
) -> Result<(Vec<RunResult>, Option<KeptGateway>), SimError> {
    let mut specs = plan.specs()?;
    let total: u64 = specs.iter().map(|s| s.scenario.ticks()).sum();
    let bar = if plan.progress {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} ticks  {msg}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        Some(b)
    } else {
        None
    };
    for s in &mut specs {
        s.progress = bar.clone();
    }
    let last = specs.pop();
    let mut results: Vec<RunResult> = futures::stream::iter(specs.iter())
        .map(|s| async move {
            if let Some(b) = &s.progress {
                b.set_message(format!(
                    "{} {} {}",
                    s.scenario.name,
                    s.variant.as_str(),
                    s.strategy.as_str()
                ));
            }
            run(s, false).await.map(|(r, _)| r)
        })
        .buffered(plan.parallel.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut kept = None;
    if let Some(s) = last {
        let (r, k) = run(&s, serve_last).await?;
        results.push(r);
        kept = k;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((results, kept))
}
