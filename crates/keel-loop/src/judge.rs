//! The judge, pure: which recorded replies a second model audits (deterministic in the
//! interaction id, more where a slice looks suspicious), the budget that sheds what does not fit
//! (requests per minute, tokens per day, replies too old to matter), the request it is asked
//! (OpenAI chat completions with a JSON `response_format`), the strict reading of its verdict
//! (`ok | outdated | violation | unsure`), and the `JudgeVerdict` event. The gateway's judge
//! worker does the HTTP call and persists [`WorkerState`]; nothing here reads a clock.

use keel_core::{EventKind, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The first words of the judge's system message: how a model (the simulator's, a proxy)
/// recognises a judge request.
pub const JUDGE_MARKER: &str = "You are Keel's judge.";

/// `[judge]` in keel.toml: which upstream and model audit replies, how many, within what budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// A configured `[[upstreams]]` name.
    pub upstream: String,
    /// The model asked (sent as `model`).
    pub model: String,
    /// Share of replies audited in a slice that looks normal (0 to 1).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    /// Share audited in a suspicious slice: one with an open alert on its tenant and topic (or
    /// answer cluster), or a reply whose learned `outdated`/`violation`/`wrong_answer` score is
    /// at least `boost_score`.
    #[serde(default = "default_boost_rate")]
    pub boost_rate: f64,
    /// Learned-monitor score from which a reply counts as suspicious.
    #[serde(default = "default_boost_score")]
    pub boost_score: f64,
    /// At most this many judge requests start per minute (by the injected clock); sampled
    /// replies beyond it are shed (counted), never queued.
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// At most this many tokens (prompt + completion, as the upstream reports them; estimated
    /// when it does not) per UTC day.
    #[serde(default = "default_tokens_per_day")]
    pub tokens_per_day: u64,
    /// Time limit of one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts after a failure (transport, timeout, 5xx/429, an unreadable verdict).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubles each retry.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// A sampled reply older than this when the worker reaches it is shed as stale (so a
    /// worker that fell behind catches up instead of building a backlog).
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: i64,
    /// `max_tokens` of the judge's answer (also reserved in the token budget before a call).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

fn default_sample_rate() -> f64 {
    0.05
}
fn default_boost_rate() -> f64 {
    0.25
}
fn default_boost_score() -> f64 {
    0.5
}
fn default_rpm() -> u32 {
    30
}
fn default_tokens_per_day() -> u64 {
    1_000_000
}
fn default_timeout_ms() -> u64 {
    20_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    200
}
fn default_max_age_ms() -> i64 {
    10 * 60 * 1000
}
fn default_max_tokens() -> u32 {
    400
}

impl JudgeConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |k: &str, why: &str| Err(format!("judge.{k}: {why}"));
        for (k, r) in [
            ("sample_rate", self.sample_rate),
            ("boost_rate", self.boost_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return bad(k, "must be between 0 and 1");
            }
        }
        if self.model.trim().is_empty() {
            return bad("model", "must not be empty");
        }
        if self.requests_per_minute == 0 {
            return bad("requests_per_minute", "must be positive");
        }
        if self.timeout_ms == 0 {
            return bad("timeout_ms", "must be positive");
        }
        if self.retries > 10 {
            return bad("retries", "must be at most 10");
        }
        if self.max_age_ms <= 0 {
            return bad("max_age_ms", "must be positive");
        }
        Ok(())
    }

    /// The audit rate for a reply.
    pub fn rate(&self, suspicious: bool) -> f64 {
        if suspicious {
            self.boost_rate.max(self.sample_rate)
        } else {
            self.sample_rate
        }
    }
}

/// Whether the judge audits this interaction at `rate`: a fixed hash of the id (FNV-1a 64
/// over `judge|id`, then the SplitMix64 finaliser so similar ids spread evenly; independent of
/// the review queue's audit sample), the same on every replica and on replay.
pub fn sampled(interaction_id: &str, rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"judge|".iter().chain(interaction_id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// An open alert's slice, as far as the judge's boost reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspectSlice {
    pub tenant: String,
    /// `None`: every topic of the tenant.
    pub topic: Option<String>,
    /// `Some`: only replies of this answer cluster.
    pub cluster: Option<String>,
}

impl SuspectSlice {
    /// The slice of an `AlertRaised` payload: its `slice` (tenant, topic, cluster) when it has
    /// one, else its `segment` (tenant, topic; `-` = none).
    pub fn of_alert(alert: &Value) -> Option<SuspectSlice> {
        let s = if alert["slice"].is_object() {
            &alert["slice"]
        } else {
            &alert["segment"]
        };
        let text = |v: &Value| {
            v.as_str()
                .filter(|t| !t.is_empty() && *t != "-")
                .map(str::to_string)
        };
        Some(SuspectSlice {
            tenant: text(&s["tenant"])?,
            topic: text(&s["topic"]),
            cluster: text(&s["cluster"]),
        })
    }

    fn covers(&self, record: &Value) -> bool {
        let ctx = &record["context"];
        if ctx["tenant"].as_str() != Some(self.tenant.as_str()) {
            return false;
        }
        if let Some(c) = &self.cluster {
            return record["answer_cluster"].as_str() == Some(c.as_str());
        }
        self.topic
            .as_deref()
            .is_none_or(|t| ctx["topic"].as_str() == Some(t))
    }
}

/// The learned labels whose score makes a reply suspicious.
const SUSPECT_LABELS: [&str; 3] = ["outdated", "violation", "wrong_answer"];

/// Whether a recorded interaction sits in a suspicious slice (see [`JudgeConfig::boost_rate`]).
pub fn suspicious(cfg: &JudgeConfig, record: &Value, open: &[SuspectSlice]) -> bool {
    let learned = &record["decision"]["learned"];
    SUSPECT_LABELS
        .iter()
        .any(|l| learned[*l].as_f64().is_some_and(|s| s >= cfg.boost_score))
        || open.iter().any(|s| s.covers(record))
}

/// Why a sampled reply was not judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shed {
    /// `requests_per_minute` reached.
    RateLimit,
    /// `tokens_per_day` would be exceeded.
    TokenBudget,
    /// Older than `max_age_ms` when reached.
    Stale,
}

impl Shed {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::RateLimit => "rate_limit",
            Shed::TokenBudget => "token_budget",
            Shed::Stale => "stale",
        }
    }
}

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Requests started this minute and tokens spent this UTC day (fixed windows on the injected
/// clock), serialised with the worker's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    minute: i64,
    requests: u32,
    day: i64,
    tokens: u64,
}

impl Budget {
    fn roll(&mut self, now_ms: i64) {
        let (m, d) = (now_ms.div_euclid(MINUTE_MS), now_ms.div_euclid(DAY_MS));
        if m != self.minute {
            self.minute = m;
            self.requests = 0;
        }
        if d != self.day {
            self.day = d;
            self.tokens = 0;
        }
    }

    /// Admits one request expected to cost `reserve` tokens (counted now), or says why not.
    pub fn admit(&mut self, cfg: &JudgeConfig, now_ms: i64, reserve: u64) -> Result<(), Shed> {
        self.roll(now_ms);
        if self.requests >= cfg.requests_per_minute {
            return Err(Shed::RateLimit);
        }
        if self.tokens.saturating_add(reserve) > cfg.tokens_per_day {
            return Err(Shed::TokenBudget);
        }
        self.requests += 1;
        self.tokens += reserve;
        Ok(())
    }

    /// Replaces an admitted request's reservation by what it actually cost.
    pub fn settle(&mut self, now_ms: i64, reserved: u64, used: u64) {
        self.roll(now_ms);
        self.tokens = self.tokens.saturating_sub(reserved).saturating_add(used);
    }

    /// Tokens counted for the current day.
    pub fn tokens_today(&self) -> u64 {
        self.tokens
    }
}

/// What the judge worker persists (key `judge` in `worker_state`), in the transaction of the
/// verdicts it appends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerState {
    /// The last event sequence number looked at.
    pub cursor: i64,
    pub budget: Budget,
    /// Sampled replies shed so far, by reason.
    #[serde(default)]
    pub shed: std::collections::BTreeMap<String, u64>,
}

/// What to do with one recorded interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not in the sample (or nothing to judge).
    Skip,
    /// Sampled but not judged.
    Shed(Shed),
    /// Ask the judge; `reserve` tokens were counted in the budget.
    Judge { reserve: u64 },
}

/// Decides for one `InteractionRecorded` payload at `now_ms` (the record's time is its
/// `finished_ms`): only replies with text are judged; the sample is [`sampled`] at
/// [`JudgeConfig::rate`]; a sampled reply is shed when stale or over budget.
pub fn decide(
    cfg: &JudgeConfig,
    budget: &mut Budget,
    record: &Value,
    open: &[SuspectSlice],
    now_ms: i64,
) -> Decision {
    let (Some(id), Some(reply)) = (record["id"].as_str(), reply_text(record)) else {
        return Decision::Skip;
    };
    if !sampled(id, cfg.rate(suspicious(cfg, record, open))) {
        return Decision::Skip;
    }
    let at = record["finished_ms"].as_i64().unwrap_or(now_ms);
    if now_ms - at > cfg.max_age_ms {
        return Decision::Shed(Shed::Stale);
    }
    let reserve = estimate_tokens(reply)
        + estimate_tokens(&question_text(record))
        + 400
        + u64::from(cfg.max_tokens);
    match budget.admit(cfg, now_ms, reserve) {
        Ok(()) => Decision::Judge { reserve },
        Err(s) => Decision::Shed(s),
    }
}

/// A rough token count (4 bytes a token), for budgeting before the upstream reports usage.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// The first choice's text of a recorded interaction, if it has any.
pub fn reply_text(record: &Value) -> Option<&str> {
    record["response_text"][0]
        .as_str()
        .filter(|t| !t.trim().is_empty())
}

/// The last user message of a recorded request (string content or text parts).
pub fn question_text(record: &Value) -> String {
    let Some(msgs) = record["request_messages"].as_array() else {
        return String::new();
    };
    msgs.iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// A policy rule as the judge is told about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleNote {
    pub id: String,
    pub category: String,
    pub description: String,
}

/// What the judge is asked about one reply (the user message of the request, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeQuestion {
    /// RFC 3339: when the judge is asked ("today").
    pub today: String,
    pub interaction_id: String,
    pub context: Value,
    pub question: String,
    pub reply: String,
    pub rules: Vec<RuleNote>,
    /// The facts in force for the interaction's scope today (as stored: key, value, unit…).
    pub facts: Vec<Value>,
}

/// The chat completions body sent to the judge.
pub fn request_body(cfg: &JudgeConfig, q: &JudgeQuestion) -> Value {
    let system = format!(
        "{JUDGE_MARKER} Decide whether the assistant's reply is still correct and acceptable \
         TODAY ({today}), given the policy rules and the facts in force listed in the user \
         message. Answer with one JSON object and nothing else: {{\"verdict\": \"ok\" | \
         \"outdated\" | \"violation\" | \"unsure\", \"reason\": string, \"correction\": string \
         or null}}. \"outdated\": the reply states something that is no longer true today (for \
         example it contradicts a fact in force); \"violation\": the reply breaks a policy rule; \
         \"unsure\": you cannot tell. The correction is what the reply should have said.",
        today = q.today
    );
    json!({
        "model": cfg.model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": serde_json::to_string(q).unwrap_or_default()}
        ],
        "response_format": {"type": "json_object"},
        "temperature": 0,
        "max_tokens": cfg.max_tokens,
    })
}

/// The [`JudgeQuestion`] of a judge request body, when it is one (for models that answer it,
/// such as the simulator's).
pub fn question_of_request(body: &Value) -> Option<JudgeQuestion> {
    let msgs = body["messages"].as_array()?;
    let system = msgs.iter().find(|m| m["role"] == "system")?;
    if !system["content"].as_str()?.starts_with(JUDGE_MARKER) {
        return None;
    }
    let user = msgs.iter().rev().find(|m| m["role"] == "user")?;
    serde_json::from_str(user["content"].as_str()?).ok()
}

/// A verdict kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Ok,
    Outdated,
    Violation,
    Unsure,
}

impl VerdictKind {
    pub const ALL: [VerdictKind; 4] = [Self::Ok, Self::Outdated, Self::Violation, Self::Unsure];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Outdated => "outdated",
            Self::Violation => "violation",
            Self::Unsure => "unsure",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A judge's answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub reason: String,
    pub correction: Option<String>,
}

/// Longest reason or correction kept (characters).
const MAX_TEXT: usize = 2_000;

fn clip(s: &str) -> String {
    s.trim().chars().take(MAX_TEXT).collect()
}

/// Reads a chat completions response body: the first choice's content must be one JSON object
/// (a Markdown code fence around it is tolerated) with a known `verdict`, a string `reason`
/// (non-empty unless the verdict is `ok`) and a `correction` that is a string or null. Anything
/// else is an error saying what was wrong (the worker records it as `unsure`).
pub fn parse_response(body: &Value) -> Result<Verdict, String> {
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .ok_or("the response has no choices[0].message.content string")?;
    parse_verdict(content)
}

/// Reads the verdict object from the judge's message content (see [`parse_response`]).
pub fn parse_verdict(content: &str) -> Result<Verdict, String> {
    let mut text = content.trim();
    if let Some(rest) = text.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        text = rest.strip_suffix("```").unwrap_or(rest).trim();
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("not a JSON object".into());
    };
    let kind = match o.get("verdict") {
        Some(Value::String(s)) => VerdictKind::parse(s).ok_or_else(|| {
            format!(
                "unknown verdict `{}`",
                clip(s).chars().take(40).collect::<String>()
            )
        })?,
        Some(_) => return Err("`verdict` is not a string".into()),
        None => return Err("no `verdict`".into()),
    };
    let reason = match o.get("reason") {
        Some(Value::String(s)) => clip(s),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err("`reason` is not a string".into()),
    };
    if reason.is_empty() && kind != VerdictKind::Ok {
        return Err(format!("a `{}` verdict without a reason", kind.as_str()));
    }
    let correction = match o.get("correction") {
        Some(Value::String(s)) => Some(clip(s)).filter(|c| !c.is_empty()),
        None | Some(Value::Null) => None,
        Some(_) => return Err("`correction` is not a string or null".into()),
    };
    Ok(Verdict {
        kind,
        reason,
        correction,
    })
}

/// Tokens the upstream reports for a response (`usage.total_tokens`), if any.
pub fn reported_tokens(body: &Value) -> Option<u64> {
    body["usage"]["total_tokens"].as_u64()
}

/// How one judge call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A read verdict, or `unsure` when `error` is set.
    pub verdict: Verdict,
    pub attempts: u32,
    /// What went wrong with the last attempt (timeout, status, unreadable answer).
    pub error: Option<String>,
}

impl Outcome {
    /// A failed call: recorded as `unsure` with the error.
    pub fn failed(attempts: u32, error: String) -> Outcome {
        Outcome {
            verdict: Verdict {
                kind: VerdictKind::Unsure,
                reason: "the judge gave no usable answer".into(),
                correction: None,
            },
            attempts,
            error: Some(error),
        }
    }
}

/// The `JudgeVerdict` event for `record` (an `InteractionRecorded` payload).
pub fn verdict_event(
    id: &str,
    record: &Value,
    tenant: &str,
    judge_model: &str,
    outcome: &Outcome,
    at_ms: i64,
) -> NewEvent {
    NewEvent {
        kind: EventKind::JUDGE_VERDICT.to_string(),
        actor: "judge".to_string(),
        tenant: tenant.to_string(),
        at_ms,
        payload: json!({
            "id": id,
            "interaction_id": record["id"],
            "verdict": outcome.verdict.kind.as_str(),
            "reason": outcome.verdict.reason,
            "correction": outcome.verdict.correction,
            "judge_model": judge_model,
            "attempts": outcome.attempts,
            "error": outcome.error,
            "context": record["context"],
            "policy_version": record["policy_version"],
            "answer_cluster": record["answer_cluster"],
        }),
    }
}

#[cfg(test)]
mod tests;
