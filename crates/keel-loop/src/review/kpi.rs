//! KPIs from the event log: CSAT, wrong-answer rate (reports and reviews), violation and
//! intervention rates by category (see [`crate::vocab`]), escalation rate, time to human, review load and backlog, per time bucket and
//! segment, with 95% Wilson intervals; comparisons of two periods or policy versions with the
//! difference's interval (Newcombe for rates, Welch for means). Pure: events and items in, rows
//! out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use keel_core::StoredEvent;
use serde::Serialize;
use serde_json::{json, Value};

use super::kinds;

/// The normal quantile for 95% two-sided intervals.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for `k` successes in `n` trials (`None` when `n` is 0).
pub fn wilson(k: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// Newcombe's hybrid score interval for `p_a - p_b` (method 10), from Wilson intervals.
pub fn newcombe_diff(ka: u64, na: u64, kb: u64, nb: u64, z: f64) -> Option<(f64, f64, f64)> {
    let (la, ua) = wilson(ka, na, z)?;
    let (lb, ub) = wilson(kb, nb, z)?;
    let pa = ka as f64 / na as f64;
    let pb = kb as f64 / nb as f64;
    let d = pa - pb;
    let lo = d - ((pa - la).powi(2) + (ub - pb).powi(2)).sqrt();
    let hi = d + ((ua - pa).powi(2) + (pb - lb).powi(2)).sqrt();
    Some((d, lo, hi))
}

/// `p`-quantile by the nearest-rank method (`values` need not be sorted).
pub fn quantile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

/// What a KPI table groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    Tenant,
    Locale,
    Jurisdiction,
    PolicyVersion,
    Topic,
}

impl Dim {
    /// Parses `tenant|locale|jurisdiction|policy_version|topic`.
    pub fn parse(s: &str) -> Option<Dim> {
        Some(match s {
            "tenant" => Dim::Tenant,
            "locale" => Dim::Locale,
            "jurisdiction" => Dim::Jurisdiction,
            "policy_version" | "policy" => Dim::PolicyVersion,
            "topic" => Dim::Topic,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Tenant => "tenant",
            Dim::Locale => "locale",
            Dim::Jurisdiction => "jurisdiction",
            Dim::PolicyVersion => "policy_version",
            Dim::Topic => "topic",
        }
    }

    fn value(self, tenant: &str, context: &Value, policy_version: &Value) -> String {
        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
        match self {
            Dim::Tenant => tenant.to_string(),
            Dim::Locale => s(&context["locale"]),
            Dim::Jurisdiction => s(&context["jurisdiction"]),
            Dim::PolicyVersion => s(policy_version),
            Dim::Topic => s(&context["topic"]),
        }
    }
}

/// Parses a bucket width: `none`, `hour`, `day`, `week`, or `<n>m|h|d` (milliseconds out).
pub fn parse_bucket(s: &str) -> Option<Option<i64>> {
    const M: i64 = 60_000;
    let ms = match s {
        "" | "none" | "all" => return Some(None),
        "hour" => 60 * M,
        "day" => 24 * 60 * M,
        "week" => 7 * 24 * 60 * M,
        _ => {
            let (num, unit) = s.split_at(s.len().saturating_sub(1));
            let n: i64 = num.parse().ok().filter(|n| *n > 0 && *n <= 100_000)?;
            n * match unit {
                "m" => M,
                "h" => 60 * M,
                "d" => 24 * 60 * M,
                _ => return None,
            }
        }
    };
    Some(Some(ms))
}

/// Parses a time: Unix milliseconds, an RFC 3339 time, a date `YYYY-MM-DD` (UTC midnight), or
/// a span back from `now_ms` (`7d`, `24h`, `90m`).
pub fn parse_time(s: &str, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    let width = parse_bucket(s)??;
    Some(now_ms - width)
}

/// What to compute.
#[derive(Debug, Clone)]
pub struct KpiQuery {
    pub from_ms: i64,
    /// Exclusive.
    pub to_ms: i64,
    /// `None` = one bucket for the whole period.
    pub bucket_ms: Option<i64>,
    pub group_by: Vec<Dim>,
    /// The current time (backlog ages never look past it).
    pub now_ms: i64,
}

/// A review item as the KPIs see it.
#[derive(Debug, Clone)]
pub struct ItemFact {
    pub tenant: String,
    pub context: Value,
    pub policy_version: Value,
    pub created_ms: i64,
    pub done_ms: Option<i64>,
}

/// A count out of a total, with its rate and 95% Wilson interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Proportion {
    pub count: u64,
    pub n: u64,
    pub rate: Option<f64>,
    pub ci95: Option<[f64; 2]>,
}

impl Proportion {
    pub fn new(count: u64, n: u64) -> Self {
        Proportion {
            count,
            n,
            rate: (n > 0).then(|| count as f64 / n as f64),
            ci95: wilson(count, n, Z95).map(|(l, u)| [l, u]),
        }
    }
}

/// CSAT: mean, spread and the 1–5 distribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Csat {
    pub n: u64,
    pub mean: Option<f64>,
    /// Sample standard deviation.
    pub sd: Option<f64>,
    /// Counts of 1, 2, 3, 4, 5.
    pub distribution: [u64; 5],
}

/// Time from `requested` to `human_joined`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeToHuman {
    pub n: u64,
    pub mean_ms: Option<f64>,
    pub p90_ms: Option<f64>,
}

/// Review load in a bucket and the backlog at its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReviewLoad {
    pub created: u64,
    pub completed: u64,
    pub backlog: u64,
    pub backlog_age_mean_ms: Option<f64>,
    pub backlog_age_max_ms: Option<i64>,
    /// Percent agreement over items labelled by several reviewers (0..1).
    pub agreement: Option<f64>,
}

/// One row of the KPI table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KpiRow {
    pub bucket_start_ms: i64,
    pub bucket_end_ms: i64,
    pub group: BTreeMap<String, String>,
    pub interactions: u64,
    pub csat: Csat,
    pub thumbs_up: u64,
    pub thumbs_down: u64,
    /// Interactions users reported wrong, out of interactions.
    pub wrong_answer_reports: Proportion,
    /// Reviews with verdict `wrong_answer`, out of reviews.
    pub wrong_answer_reviews: Proportion,
    /// Interactions the policy escalated, out of interactions.
    pub escalations: Proportion,
    /// Violations: interactions where an output rule of the category blocked or redacted the
    /// reply (the model said something forbidden; [`crate::vocab`]).
    pub violations: BTreeMap<String, Proportion>,
    /// Interventions: interactions where a rule of the category (either phase) changed the
    /// reply — blocked, escalated, redacted, rewrote, corrected or appended.
    pub interventions: BTreeMap<String, Proportion>,
    /// Reviews with verdict `violation` of the category, out of reviews.
    pub review_violations: BTreeMap<String, Proportion>,
    pub time_to_human: TimeToHuman,
    pub reviews: ReviewLoad,
}

#[derive(Default)]
struct Acc {
    interactions: u64,
    csat: Vec<f64>,
    dist: [u64; 5],
    up: u64,
    down: u64,
    wrong_reported: BTreeSet<String>,
    escalations: u64,
    violations: BTreeMap<String, u64>,
    interventions: BTreeMap<String, u64>,
    reviews: u64,
    review_wrong: u64,
    review_violations: BTreeMap<String, u64>,
    tth: Vec<f64>,
    created: u64,
    completed: u64,
    labels: BTreeMap<String, Vec<String>>,
}

type Key = (i64, Vec<String>);

/// A handoff's own time, its event and its group.
type HandoffAt = (i64, String, Vec<String>);

impl KpiQuery {
    fn bucket(&self, at_ms: i64) -> Option<i64> {
        if at_ms < self.from_ms || at_ms >= self.to_ms {
            return None;
        }
        Some(match self.bucket_ms {
            None => self.from_ms,
            Some(w) => self.from_ms + (at_ms - self.from_ms) / w * w,
        })
    }

    fn bucket_end(&self, start: i64) -> i64 {
        match self.bucket_ms {
            None => self.to_ms,
            Some(w) => (start + w).min(self.to_ms),
        }
    }

    fn group(&self, tenant: &str, context: &Value, pv: &Value) -> Vec<String> {
        self.group_by
            .iter()
            .map(|d| d.value(tenant, context, pv))
            .collect()
    }

    fn bucket_starts(&self) -> Vec<i64> {
        match self.bucket_ms {
            None => vec![self.from_ms],
            Some(w) => {
                let mut v = Vec::new();
                let mut t = self.from_ms;
                while t < self.to_ms && v.len() < 10_000 {
                    v.push(t);
                    t += w;
                }
                v
            }
        }
    }
}

/// Computes the KPI rows for `q` from events (any kinds; the relevant ones are used) and the
/// review items. Rows are sorted by bucket, then group; groups with no data are left out.
pub fn compute(q: &KpiQuery, events: &[StoredEvent], items: &[ItemFact]) -> Vec<KpiRow> {
    let mut acc: BTreeMap<Key, Acc> = BTreeMap::new();
    // Handoffs: per conversation, ordered by their own time.
    let mut handoffs: HashMap<(String, String), Vec<HandoffAt>> = HashMap::new();
    for ev in events {
        let p = &ev.payload;
        if !p.is_object() {
            continue; // erased
        }
        let group = q.group(&ev.tenant, &p["context"], &p["policy_version"]);
        if ev.kind == kinds::HANDOFF {
            let at = p["at_ms"].as_i64().unwrap_or(ev.at_ms);
            let conv = p["conversation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let event = p["event"].as_str().unwrap_or_default().to_string();
            handoffs
                .entry((ev.tenant.clone(), conv))
                .or_default()
                .push((at, event, group));
            continue;
        }
        let Some(b) = q.bucket(ev.at_ms) else {
            continue;
        };
        let a = acc.entry((b, group)).or_default();
        match ev.kind.as_str() {
            keel_core::EventKind::INTERACTION_RECORDED => {
                if p["outcome"].as_str() == Some("client_cancelled") {
                    continue;
                }
                a.interactions += 1;
                if p["decision"]["action"].as_str() == Some("escalate") {
                    a.escalations += 1;
                }
                for c in crate::vocab::violation_categories(&p["decision"]) {
                    *a.violations.entry(c).or_default() += 1;
                }
                for c in crate::vocab::intervention_categories(&p["decision"]) {
                    *a.interventions.entry(c).or_default() += 1;
                }
            }
            k if k == kinds::FEEDBACK => {
                if let Some(c) = p["csat"].as_u64().filter(|c| (1..=5).contains(c)) {
                    a.csat.push(c as f64);
                    a.dist[c as usize - 1] += 1;
                }
                match p["thumbs"].as_str() {
                    Some("up") => a.up += 1,
                    Some("down") => a.down += 1,
                    _ => {}
                }
                if p["wrong_answer"].as_bool() == Some(true) {
                    if let Some(id) = p["interaction_id"].as_str() {
                        a.wrong_reported.insert(id.to_string());
                    }
                }
            }
            k if k == kinds::COMPLETED => {
                a.reviews += 1;
                a.completed += 1;
                let verdict = p["verdict"].as_str().unwrap_or_default();
                match verdict {
                    "wrong_answer" => a.review_wrong += 1,
                    "violation" => {
                        let c = p["category"].as_str().unwrap_or("-").to_string();
                        *a.review_violations.entry(c).or_default() += 1;
                    }
                    _ => {}
                }
                if let Some(item) = p["item_id"].as_str() {
                    let v = match p["category"].as_str() {
                        Some(c) => format!("{verdict}:{c}"),
                        None => verdict.to_string(),
                    };
                    a.labels.entry(item.to_string()).or_default().push(v);
                }
            }
            _ => {}
        }
    }
    for mut list in handoffs.into_values() {
        list.sort_by_key(|(at, _, _)| *at);
        let mut open: Option<(i64, Vec<String>)> = None;
        for (at, event, group) in list {
            match event.as_str() {
                "requested" if open.is_none() => open = Some((at, group)),
                "human_joined" => {
                    if let Some((req, group)) = open.take() {
                        if let Some(b) = q.bucket(req) {
                            acc.entry((b, group))
                                .or_default()
                                .tth
                                .push((at - req).max(0) as f64);
                        }
                    }
                }
                "resolved" => open = None,
                _ => {}
            }
        }
    }
    // Items: created per bucket; backlog at each bucket's end.
    let starts = q.bucket_starts();
    let mut backlog: BTreeMap<Key, Vec<i64>> = BTreeMap::new();
    for it in items {
        let group = q.group(&it.tenant, &it.context, &it.policy_version);
        if let Some(b) = q.bucket(it.created_ms) {
            acc.entry((b, group.clone())).or_default().created += 1;
        }
        for &s in &starts {
            let end = q.bucket_end(s).min(q.now_ms);
            if it.created_ms < end && it.done_ms.is_none_or(|d| d >= end) {
                backlog
                    .entry((s, group.clone()))
                    .or_default()
                    .push(end - it.created_ms);
                acc.entry((s, group.clone())).or_default();
            }
        }
    }
    acc.into_iter()
        .map(|((b, group), a)| {
            let ages = backlog.remove(&(b, group.clone())).unwrap_or_default();
            row(q, b, group, a, ages)
        })
        .collect()
}

fn row(q: &KpiQuery, b: i64, group: Vec<String>, a: Acc, ages: Vec<i64>) -> KpiRow {
    let n = a.csat.len() as u64;
    let mean = (n > 0).then(|| a.csat.iter().sum::<f64>() / n as f64);
    let sd = mean
        .filter(|_| n > 1)
        .map(|m| (a.csat.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    let rate_map = |m: BTreeMap<String, u64>, n: u64| {
        m.into_iter()
            .map(|(k, c)| (k, Proportion::new(c, n)))
            .collect()
    };
    KpiRow {
        bucket_start_ms: b,
        bucket_end_ms: q.bucket_end(b),
        group: q
            .group_by
            .iter()
            .map(|d| d.as_str().to_string())
            .zip(group)
            .collect(),
        interactions: a.interactions,
        csat: Csat {
            n,
            mean,
            sd,
            distribution: a.dist,
        },
        thumbs_up: a.up,
        thumbs_down: a.down,
        // Reports about interactions before the period can outnumber its interactions.
        wrong_answer_reports: Proportion::new(
            a.wrong_reported.len() as u64,
            a.interactions.max(a.wrong_reported.len() as u64),
        ),
        wrong_answer_reviews: Proportion::new(a.review_wrong, a.reviews),
        escalations: Proportion::new(a.escalations, a.interactions),
        violations: rate_map(a.violations, a.interactions),
        interventions: rate_map(a.interventions, a.interactions),
        review_violations: rate_map(a.review_violations, a.reviews),
        time_to_human: TimeToHuman {
            n: a.tth.len() as u64,
            mean_ms: (!a.tth.is_empty()).then(|| a.tth.iter().sum::<f64>() / a.tth.len() as f64),
            p90_ms: quantile(&a.tth, 0.9),
        },
        reviews: ReviewLoad {
            created: a.created,
            completed: a.completed,
            backlog: ages.len() as u64,
            backlog_age_mean_ms: (!ages.is_empty())
                .then(|| ages.iter().sum::<i64>() as f64 / ages.len() as f64),
            backlog_age_max_ms: ages.iter().max().copied(),
            agreement: super::percent_agreement(
                a.labels
                    .values()
                    .map(|v| v.iter().map(String::as_str).collect()),
            ),
        },
    }
}

/// The difference `a − b` of one rate, with Newcombe's 95% interval.
fn diff_rate(a: &Proportion, b: &Proportion) -> Value {
    match newcombe_diff(a.count, a.n, b.count, b.n, Z95) {
        Some((d, lo, hi)) => json!({"a": a.rate, "b": b.rate, "diff": d, "ci95": [lo, hi]}),
        None => json!({"a": a.rate, "b": b.rate, "diff": null, "ci95": null}),
    }
}

/// Compares two rows (two periods or two policy versions): each rate's difference `a − b`
/// with its 95% interval, CSAT's mean difference with a Welch (normal) interval, and time to
/// human's mean difference.
pub fn compare(a: &KpiRow, b: &KpiRow) -> Value {
    let csat = match (a.csat.mean, b.csat.mean) {
        (Some(ma), Some(mb)) => {
            let se = (a.csat.sd.unwrap_or(0.0).powi(2) / a.csat.n as f64
                + b.csat.sd.unwrap_or(0.0).powi(2) / b.csat.n as f64)
                .sqrt();
            let d = ma - mb;
            json!({"a": ma, "b": mb, "diff": d, "ci95": (a.csat.n > 1 && b.csat.n > 1).then_some([d - Z95 * se, d + Z95 * se])})
        }
        _ => json!({"a": a.csat.mean, "b": b.csat.mean, "diff": null, "ci95": null}),
    };
    let by_category = |fa: &BTreeMap<String, Proportion>, fb: &BTreeMap<String, Proportion>| {
        let mut out = serde_json::Map::new();
        let cats: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        for c in cats {
            let zero_a = Proportion::new(0, a.interactions);
            let zero_b = Proportion::new(0, b.interactions);
            out.insert(
                c.clone(),
                diff_rate(fa.get(c).unwrap_or(&zero_a), fb.get(c).unwrap_or(&zero_b)),
            );
        }
        out
    };
    let violations = by_category(&a.violations, &b.violations);
    let interventions = by_category(&a.interventions, &b.interventions);
    json!({
        "csat_mean": csat,
        "wrong_answer_reports": diff_rate(&a.wrong_answer_reports, &b.wrong_answer_reports),
        "wrong_answer_reviews": diff_rate(&a.wrong_answer_reviews, &b.wrong_answer_reviews),
        "escalations": diff_rate(&a.escalations, &b.escalations),
        "violations": violations,
        "interventions": interventions,
        "time_to_human_mean_ms": {
            "a": a.time_to_human.mean_ms, "b": b.time_to_human.mean_ms,
            "diff": a.time_to_human.mean_ms.zip(b.time_to_human.mean_ms).map(|(x, y)| x - y)
        },
    })
}

fn fmt_rate(p: &Proportion) -> String {
    match (p.rate, p.ci95) {
        (Some(r), Some([l, u])) => format!(
            "{:.1}% [{:.1}-{:.1}] ({}/{})",
            r * 100.0,
            l * 100.0,
            u * 100.0,
            p.count,
            p.n
        ),
        _ => "-".to_string(),
    }
}

fn fmt_opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map(|x| format!("{:.*}", digits, x / scale))
        .unwrap_or_else(|| "-".to_string())
}

/// A plain-text table of `rows` (tab-separated columns, one row per line, header first).
/// `fmt_time` renders a bucket start.
pub fn table(rows: &[KpiRow], fmt_time: &dyn Fn(i64) -> String) -> String {
    let mut out = String::from(
        "BUCKET\tGROUP\tINTERACTIONS\tCSAT_MEAN\tCSAT_1..5\tWRONG_REPORTED\tWRONG_REVIEWED\tESCALATED\tVIOLATIONS\tINTERVENTIONS\tTTH_MEAN_S\tTTH_P90_S\tREVIEWS_NEW\tREVIEWS_DONE\tBACKLOG\tBACKLOG_AGE_MAX_S\tAGREEMENT\n",
    );
    for r in rows {
        let group = if r.group.is_empty() {
            "all".to_string()
        } else {
            r.group
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let by_category = |m: &BTreeMap<String, Proportion>| {
            if m.is_empty() {
                "-".to_string()
            } else {
                m.iter()
                    .map(|(k, p)| format!("{k}:{}", p.count))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let violations = by_category(&r.violations);
        let interventions = by_category(&r.interventions);
        let d = r.csat.distribution;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}/{}/{}/{}/{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            fmt_time(r.bucket_start_ms),
            group,
            r.interactions,
            fmt_opt(r.csat.mean, 1.0, 2),
            d[0],
            d[1],
            d[2],
            d[3],
            d[4],
            fmt_rate(&r.wrong_answer_reports),
            fmt_rate(&r.wrong_answer_reviews),
            fmt_rate(&r.escalations),
            violations,
            interventions,
            fmt_opt(r.time_to_human.mean_ms, 1000.0, 1),
            fmt_opt(r.time_to_human.p90_ms, 1000.0, 1),
            r.reviews.created,
            r.reviews.completed,
            r.reviews.backlog,
            fmt_opt(r.reviews.backlog_age_max_ms.map(|x| x as f64), 1000.0, 1),
            fmt_opt(r.reviews.agreement.map(|a| a * 100.0), 1.0, 0),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
