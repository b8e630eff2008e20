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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use keel_core::auth::mint_key;
use keel_core::{Clock, ManualClock, Role};
use keel_gateway::server::open_store;
use keel_gateway::{Config, ServeHandle};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::grade::{self, Grade, Slice};
use crate::metrics::{self, Alert, Served, TickStats};
use crate::model::{ModelIndex, ModelServer};
use crate::rng::Rng;
use crate::scenario::{by_locale, Scenario};
use crate::traffic::{self, Conversation, REACTIONS, REVIEWS};
use crate::update;
use crate::SimError;

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

struct Keys {
    app: String,
    admin: String,
    reviewers: Vec<String>,
}

/// The HTTP side of a run.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), SimError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// A call that must succeed.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Result<Value, SimError> {
        let (status, v) = self.call(method.clone(), path, key, body).await?;
        if !status.is_success() {
            return Err(SimError::Gateway(format!(
                "{method} {path} → {status}: {}",
                v["error"]["message"].as_str().unwrap_or("")
            )));
        }
        Ok(v)
    }
}

/// The reply as the client received it.
struct Reply {
    id: String,
    text: String,
    withheld: bool,
}

/// Sends one chat request (JSON or SSE) and reads the reply.
async fn chat(c: &Client, key: &str, body: &Value, stream: bool) -> Result<Reply, SimError> {
    let resp = c
        .http
        .post(format!("{}/v1/chat/completions", c.base))
        .bearer_auth(key)
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    let decision = resp
        .headers()
        .get("x-keel-decision")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let header_id = resp
        .headers()
        .get("x-keel-interaction-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        return Err(SimError::Gateway(format!(
            "chat → {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    let input_withheld = matches!(decision.as_str(), "block" | "escalate");
    if !stream {
        let v: Value = serde_json::from_slice(&bytes)?;
        let choice = &v["choices"][0];
        return Ok(Reply {
            id: v["id"].as_str().unwrap_or(&header_id).to_string(),
            text: choice["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            withheld: input_withheld || choice["finish_reason"] == "content_filter",
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::new();
    let mut withheld = input_withheld;
    let mut id = header_id;
    for ev in text.split("\n\n") {
        let Some(data) = ev.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(i) = v["id"].as_str() {
            id = i.to_string();
        }
        let ch = &v["choices"][0];
        if let Some(t) = ch["delta"]["content"].as_str() {
            out.push_str(t);
        }
        if ch["finish_reason"] == "content_filter" {
            withheld = true;
        }
    }
    Ok(Reply {
        id,
        text: out,
        withheld,
    })
}

fn sim_config(s: &Scenario, strategy: Strategy, dir: &Path, model_url: &str) -> String {
    let g = &s.gateway;
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {dir:?}\n[storage]\nurl = {url:?}\ndurability = \"async\"\n\
         [[upstreams]]\nname = \"scenario-model\"\nbase_url = {model_url:?}\nmodels = [\"*\"]\ntimeout_ms = 30000\nretries = 0\n\
         [ledger]\ncheckpoint_every_events = 1000000\ncheckpoint_every_ms = 86400000000\n",
        dir = dir.display().to_string(),
        url = format!("sqlite://{}", dir.join("keel.db").display()),
    );
    t.push_str(&format!(
        "[sim]\nmanual_clock = true\nstart_ms = {}\n",
        s.start_ms - s.tick_ms
    ));
    match strategy {
        Strategy::Static => t.push_str("[monitors]\nrules = []\n[review]\nsample_rate = 0.0\n"),
        _ => {
            let complaint: Vec<String> = s
                .users
                .complaint_text
                .values()
                .map(|c| format!("{c:?}"))
                .collect();
            t.push_str(&format!(
                "[monitors]\nmin_samples = {}\ncomplaint_terms = [{}]\n",
                g.min_samples,
                complaint.join(", ")
            ));
            for (metric, change) in [
                ("wrong_answer_rate", g.min_change),
                ("csat", g.min_change * 10.0),
                ("complaint_rate", g.min_change),
                ("escalate_rate", g.min_change),
                ("block_rate", g.min_change),
            ] {
                t.push_str(&format!(
                    "[[monitors.rules]]\nmetric = \"{metric}\"\ndetector = \"adwin:delta={}\"\nmin_change = {change}\n",
                    g.delta
                ));
            }
            t.push_str(&format!("[review]\nsample_rate = {}\n", g.sample_rate));
            // Canaries are judged on this scenario's traffic, not a production day's.
            t.push_str("[update]\nmin_samples_per_arm = 40\n");
        }
    }
    t
}

/// Simulated time through the gateway's sim endpoints (`[sim] manual_clock = true`).
struct TimeControl;

impl TimeControl {
    async fn set(&self, c: &Client, admin: &str, now_ms: i64) -> Result<(), SimError> {
        c.ok(
            Method::POST,
            "/api/sim/clock",
            admin,
            Some(&json!({"now_ms": now_ms})),
        )
        .await?;
        Ok(())
    }

    /// Returns once monitors, the review queue and rollouts have processed everything.
    async fn barrier(&self, c: &Client, admin: &str) -> Result<(), SimError> {
        c.ok(Method::GET, "/api/sim/barrier", admin, None).await?;
        Ok(())
    }
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
    /// rollout id → change index, for canaries in flight
    rollouts: HashMap<String, usize>,
    /// suggestions waiting for the canary in flight: (review id, suggestion, change)
    queued: Vec<(String, Value, usize)>,
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
    let store = open_store(&config).await?;
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
        queued: Vec::new(),
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
            Some(&json!({"facts": s.facts, "reason": "scenario: facts at the model's cut-off"})),
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

/// What one conversation produced.
struct ConvOutcome {
    served: Vec<Served>,
    handoff: Option<String>,
    /// Feedback bodies, sent once the tick's interactions are committed (async durability
    /// answers before the commit).
    feedback: Vec<Value>,
}

/// What a simulated client task owns: the HTTP client, the keys, the scenario, the seed and
/// the model's index.
#[derive(Clone)]
struct ConvEnv {
    c: Client,
    keys: Arc<Keys>,
    s: Arc<Scenario>,
    seed: u64,
    model: Arc<ModelIndex>,
}

/// One conversation: its turns in order, each graded, each with the user's reaction.
async fn converse(
    env: ConvEnv,
    conv: Conversation,
    ci: usize,
    now: i64,
) -> Result<ConvOutcome, SimError> {
    let ConvEnv {
        c,
        keys,
        s,
        seed,
        model,
    } = env;
    let (c, s, conv) = (&c, s.as_ref(), &conv);
    let seg = &s.traffic.segments[conv.segment];
    let topic = &s.topics[conv.topic];
    let mut messages: Vec<Value> = Vec::new();
    let mut out = ConvOutcome {
        served: Vec::new(),
        handoff: None,
        feedback: Vec::new(),
    };
    for (ti, turn) in conv.turns.iter().enumerate() {
        messages.push(json!({"role": "user", "content": turn.prompt}));
        let mut body = json!({
            "model": s.model,
            "messages": messages,
            "metadata": {"conversation_id": conv.id, "locale": seg.locale,
                         "jurisdiction": seg.jurisdiction, "user": conv.user, "topic": topic.id},
        });
        if turn.stream {
            body["stream"] = json!(true);
        }
        let reply = chat(c, &keys.app, &body, turn.stream).await?;
        messages.push(json!({"role": "assistant", "content": reply.text}));
        let sub = &topic.subtopics[turn.subtopic];
        let slice = Slice {
            topic: &topic.id,
            subtopic: &sub.id,
            locale: &seg.locale,
            jurisdiction: &seg.jurisdiction,
            at_ms: now,
        };
        let g = grade::grade(s, &slice, &reply.text, reply.withheld);
        let raw = model.answer(&turn.prompt);
        let affected = grade::wrong_by(s, &slice, raw);
        out.served.push(Served {
            id: reply.id.clone(),
            tick: conv.tick,
            at_ms: now,
            topic: conv.topic,
            subtopic: turn.subtopic,
            segment: conv.segment,
            grade: g,
            affected,
        });
        // The user's reaction, from the truth at this time.
        let mut rng = Rng::derive(seed, &[conv.tick, REACTIONS, ci as u64, ti as u64]);
        let (reaction, csat_w) = match g {
            Grade::Good => (s.users.right, s.users.csat_right),
            Grade::Bad => (s.users.wrong, s.users.csat_wrong),
            Grade::Withheld => (s.users.withheld, s.users.csat_withheld),
        };
        let rated = rng.chance(s.users.csat_share);
        let csat = rng.weighted(&csat_w) + 1;
        let complaint = rng.chance(reaction.complaint);
        let report = rng.chance(reaction.report);
        let handoff = rng.chance(reaction.handoff);
        if rated || complaint || report {
            let mut fb = json!({"interaction_id": reply.id});
            if rated {
                fb["csat"] = json!(csat);
                fb["wrong_answer"] = json!(report);
            } else if report {
                fb["wrong_answer"] = json!(true);
            }
            if complaint {
                fb["thumbs"] = json!("down");
                if let Some(t) = by_locale(&s.users.complaint_text, &seg.locale) {
                    fb["comment"] = json!(t);
                }
            }
            out.feedback.push(fb);
        }
        if handoff {
            out.handoff = Some(conv.id.clone());
            break; // the user waits for a person
        }
    }
    Ok(out)
}

async fn read_alerts(c: &Client, keys: &Keys, now: i64, st: &mut RunState) -> Result<(), SimError> {
    let v = c
        .ok(Method::GET, "/api/alerts?limit=500", &keys.admin, None)
        .await?;
    let mut new: Vec<Alert> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["seq"].as_i64().unwrap_or(0) > st.last_alert_seq)
        .map(|a| Alert {
            seq: a["seq"].as_i64().unwrap_or(0),
            metric: a["metric"].as_str().unwrap_or("").to_string(),
            locale: a["segment"]["locale"].as_str().unwrap_or("-").to_string(),
            jurisdiction: a["segment"]["jurisdiction"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
            topic: a["segment"]["topic"].as_str().unwrap_or("-").to_string(),
            at_ms: now,
            served_before: st.served.len(),
        })
        .collect();
    new.sort_by_key(|a| a.seq);
    if let Some(last) = new.last() {
        st.last_alert_seq = last.seq;
    }
    st.alerts.extend(new);
    Ok(())
}

fn in_hours(s: &Scenario, ms: i64) -> bool {
    let hour = ((ms.rem_euclid(86_400_000)) / 3_600_000) as u32;
    hour >= s.reviewers.hours[0] && hour < s.reviewers.hours[1]
}

/// What the people of a run (support staff, reviewers, the operator) work with.
#[derive(Clone, Copy)]
struct Staff<'a> {
    c: &'a Client,
    keys: &'a Keys,
    spec: &'a RunSpec,
    seed: u64,
    /// The gateway serves the update pipeline's API (`/api/proposals`).
    update_api: bool,
}

/// People: support staff answer handoffs; in `continual`, reviewers work the queue and the
/// operator turns their suggestions into updates.
async fn humans(staff: &Staff<'_>, tick: u64, now: i64, st: &mut RunState) -> Result<(), SimError> {
    let Staff {
        c,
        keys,
        spec,
        seed,
        update_api,
    } = *staff;
    let s: &Scenario = &spec.scenario;
    let on_duty = in_hours(s, now) && s.reviewers.count > 0;
    // Handoffs: a person joins once on duty and past the latency.
    if on_duty {
        let due: Vec<(String, i64, usize)> = st
            .pending_handoffs
            .iter()
            .filter(|(_, at, _)| at + s.reviewers.latency_ms <= now)
            .cloned()
            .collect();
        st.pending_handoffs
            .retain(|(_, at, _)| at + s.reviewers.latency_ms > now);
        for (conv, _, k) in due {
            c.ok(
                Method::POST,
                "/v1/handoffs",
                &keys.app,
                Some(&json!({"conversation_id": conv, "event": "human_joined"})),
            )
            .await?;
            if let Some(x) = st.to_human.get_mut(k) {
                x.1 = Some(now);
            }
        }
    }
    if spec.strategy != Strategy::Continual {
        return Ok(());
    }
    if update_api {
        follow_rollouts(c, keys, now, st).await?;
        if st.rollouts.is_empty() && !st.queued.is_empty() {
            let (review, sug, change) = st.queued.remove(0);
            operator_acts(staff, change, &review, &sug, now, st).await?;
        }
    }
    if !on_duty {
        return Ok(());
    }
    let capacity = (f64::from(s.reviewers.count) * s.reviewers.items_per_hour * s.tick_ms as f64
        / 3.6e6)
        .round() as usize;
    let v = c
        .ok(
            Method::GET,
            "/api/reviews?status=open&limit=500",
            &keys.admin,
            None,
        )
        .await?;
    let items: Vec<Value> = v["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["age_ms"].as_i64().unwrap_or(0) >= s.reviewers.latency_ms)
        .filter(|i| !st.reviewed.contains(i["id"].as_str().unwrap_or("")))
        .take(capacity)
        .collect();
    let mut rng = Rng::derive(seed, &[tick, REVIEWS]);
    for (k, item) in items.iter().enumerate() {
        let id = item["id"].as_str().unwrap_or("").to_string();
        let key = &keys.reviewers[k % keys.reviewers.len()];
        let (status, _) = c
            .call(Method::POST, &format!("/api/reviews/{id}/claim"), key, None)
            .await?;
        st.reviewed.insert(id.clone());
        if !status.is_success() {
            continue;
        }
        let ix = item["interaction_id"].as_str().unwrap_or("");
        let served = st.by_id.get(ix).and_then(|&i| st.served.get(i));
        let created = now - item["age_ms"].as_i64().unwrap_or(0);
        if item["source"] == "escalation" {
            st.to_human.push((created, Some(now)));
        }
        // The reviewer knows the truth at the time of the reply.
        let wrong_change = served.and_then(|x| {
            if x.grade == Grade::Bad {
                x.affected.first().copied().or_else(|| {
                    let seg = &s.traffic.segments[x.segment];
                    let topic = &s.topics[x.topic];
                    grade::in_force(
                        s,
                        &Slice {
                            topic: &topic.id,
                            subtopic: &topic.subtopics[x.subtopic].id,
                            locale: &seg.locale,
                            jurisdiction: &seg.jurisdiction,
                            at_ms: x.at_ms,
                        },
                    )
                    .map(|(i, _)| i)
                    .next()
                })
            } else {
                None
            }
        });
        let accurate = rng.chance(s.reviewers.accuracy);
        // What the reviewer reads: the model's answer for that slice.
        let reply = served
            .and_then(|x| {
                let t = &s.topics[x.topic].subtopics[x.subtopic];
                by_locale(&t.answers, &s.traffic.segments[x.segment].locale)
            })
            .cloned()
            .unwrap_or_default();
        let label = match (wrong_change, accurate) {
            (Some(ch), true) => {
                let change = &s.changes[ch];
                json!({"verdict": "outdated", "corrected_response": change.right,
                       "notes": format!("no longer right since {}", keel_core::clock::format_ms(change.effective_ms)),
                       "suggestion": update::suggestion(&change.update, &reply)})
            }
            (Some(_), false) => json!({"verdict": "ok"}),
            (None, true) => json!({"verdict": "ok"}),
            (None, false) => json!({"verdict": "wrong_answer", "notes": "looks wrong to me"}),
        };
        let (status, _) = c
            .call(
                Method::POST,
                &format!("/api/reviews/{id}/label"),
                key,
                Some(&label),
            )
            .await?;
        if !status.is_success() {
            continue;
        }
        st.labels += 1;
        if let (Some(ch), true) = (wrong_change, accurate) {
            operator_acts(staff, ch, &id, &label["suggestion"], now, st).await?;
        }
    }
    Ok(())
}

/// The operator acts on a reviewer's suggestion: a proposal through the update pipeline (or,
/// without it, a direct publish), once per distinct suggestion.
async fn operator_acts(
    staff: &Staff<'_>,
    change: usize,
    review_id: &str,
    suggestion: &Value,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let Staff {
        c,
        keys,
        spec,
        update_api,
        ..
    } = *staff;
    let s: &Scenario = &spec.scenario;
    // People act after the tick's traffic: their changes count from the next request on.
    let canon = suggestion.to_string();
    if st.acted.contains_key(&canon) {
        return Ok(());
    }
    if update_api && !st.rollouts.is_empty() {
        // One canary at a time: the next proposal builds on the promoted version.
        if !st.queued.iter().any(|(_, q, _)| q == suggestion) {
            st.queued
                .push((review_id.to_string(), suggestion.clone(), change));
        }
        return Ok(());
    }
    st.acted.insert(canon, change);
    st.proposals += 1;
    if !update_api {
        publish(c, keys, s, change, st, "reviewer suggestion").await?;
        st.mitigated.entry(change).or_insert(now + 1);
        st.canary.entry(change).or_insert(now + 1);
        return Ok(());
    }
    let p = c
        .ok(
            Method::POST,
            "/api/proposals",
            &keys.admin,
            Some(&json!({"from_review": review_id, "reason": "reviewer suggestion"})),
        )
        .await?;
    let pid = p["id"].as_str().unwrap_or("").to_string();
    let approved = c
        .ok(
            Method::POST,
            &format!("/api/proposals/{pid}/approve"),
            &keys.admin,
            Some(&json!({"reason": "reviewed: the old answer is no longer right"})),
        )
        .await?;
    if p["kind"] == "fact" {
        st.mitigated.entry(change).or_insert(now + 1);
        st.canary.entry(change).or_insert(now + 1);
        return Ok(());
    }
    let _ = c
        .call(
            Method::POST,
            "/api/backtests",
            &keys.admin,
            Some(&json!({"proposal": pid})),
        )
        .await?;
    let version = approved["version"]
        .as_str()
        .or(p["candidate_version"].as_str())
        .unwrap_or("")
        .to_string();
    let r = c
        .ok(
            Method::POST,
            "/api/rollouts",
            &keys.admin,
            Some(
                &json!({"version": version, "percent": s.gateway.canary_percent, "tenant": s.tenant,
                         "reason": format!("canary for proposal {pid}")}),
            ),
        )
        .await?;
    st.canary.entry(change).or_insert(now + 1);
    if matches!(r["state"].as_str(), Some("active") | Some("promoted")) {
        st.mitigated.entry(change).or_insert(now + 1);
    } else if let Some(id) = r["id"].as_str() {
        st.rollouts.insert(id.to_string(), change);
    }
    Ok(())
}

/// How long the operator watches a canary before promoting it by hand when no guard objects.
const CANARY_WATCH_MS: i64 = 6 * 3_600_000;

/// Canaries in flight: promoted (by the worker, or by the operator once the canary has run a
/// while with enough traffic and no guard inferior) → mitigated; rolled back → the suggestion
/// may come again.
async fn follow_rollouts(
    c: &Client,
    keys: &Keys,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let ids: Vec<(String, usize)> = st.rollouts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    for (id, change) in ids {
        let r = c
            .ok(
                Method::GET,
                &format!("/api/rollouts/{id}"),
                &keys.admin,
                None,
            )
            .await?;
        let mut state = r["state"].as_str().unwrap_or("").to_string();
        if state == "canary" {
            let started = r["started_ms"].as_i64().unwrap_or(now);
            let enough = r["arms"]["canary"]["interactions"].as_u64().unwrap_or(0) >= 40;
            let objection = r["guards"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["enabled"] != false && g["verdict"] == "inferior");
            if enough && !objection && now - started >= CANARY_WATCH_MS {
                let (status, v) = c
                    .call(
                        Method::POST,
                        &format!("/api/rollouts/{id}/promote"),
                        &keys.admin,
                        Some(&json!({"reason": "canary watched: no guard inferior"})),
                    )
                    .await?;
                if status.is_success() {
                    state = v["state"].as_str().unwrap_or("promoted").to_string();
                }
            }
        }
        match state.as_str() {
            "promoted" | "active" => {
                st.mitigated.entry(change).or_insert(now + 1);
                st.rollouts.remove(&id);
            }
            "rolled_back" | "superseded" => {
                st.rollouts.remove(&id);
                st.acted.retain(|_, ch| *ch != change);
                st.canary.remove(&change);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Publishes and activates the default pack plus every update in force (or sets facts).
async fn publish(
    c: &Client,
    keys: &Keys,
    s: &Scenario,
    change: usize,
    st: &mut RunState,
    why: &str,
) -> Result<(), SimError> {
    let ch = &s.changes[change];
    if ch.update.kind == "fact_update" {
        c.ok(
            Method::POST,
            "/api/facts",
            &keys.admin,
            Some(&json!({"facts": ch.update.facts, "reason": format!("{why}: {}", ch.id)})),
        )
        .await?;
        return Ok(());
    }
    st.rules.insert(change, update::rules_for(ch));
    let extra: Vec<_> = st.rules.values().cloned().collect();
    let files = update::bundle_files(&extra)?;
    let v = c
        .ok(
            Method::POST,
            "/api/policies",
            &keys.admin,
            Some(&json!({"files": files, "reason": format!("{why}: {}", ch.id)})),
        )
        .await?;
    let version = v["version"].as_str().unwrap_or("").to_string();
    c.ok(
        Method::POST,
        &format!("/api/policies/{version}/activate"),
        &keys.admin,
        Some(&json!({"tenant": s.tenant})),
    )
    .await?;
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
