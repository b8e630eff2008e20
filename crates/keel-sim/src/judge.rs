//! The simulated judge: a scenario's optional `[judge]` (accuracy, latency, sample rate, and
//! when it learns of each change), the verdicts the scenario model gives to the gateway's judge
//! requests (from the ground truth at the simulated time the judge is asked, wrong with
//! probability `1 - accuracy`, seeded per interaction), and the gateway's `[judge]` section the
//! runner writes. Without `[judge]` there is no judge.

use std::collections::BTreeMap;

use keel_loop::judge::JudgeQuestion;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::grade::{wrong_by, Slice};
use crate::rng::Rng;
use crate::scenario::{parse_duration, Scenario};

/// `[judge]` as written in a scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJudge {
    /// Probability that a verdict is right (a wrong one says `ok` for a now-wrong reply, or
    /// `outdated` for a right one).
    #[serde(default = "default_accuracy")]
    pub accuracy: f64,
    /// How long the model takes to answer a judge request (wall-clock; default none).
    #[serde(default = "default_latency")]
    pub latency: String,
    /// The gateway's `[judge] sample_rate`.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    /// When the judge learns of a change, after its effective time: a duration (`6h`) or
    /// `never`. Default for every change.
    #[serde(default = "default_knows_after")]
    pub knows_after: String,
    /// Per change id: overrides `knows_after`.
    #[serde(default)]
    pub changes: BTreeMap<String, String>,
}

fn default_accuracy() -> f64 {
    0.95
}
fn default_latency() -> String {
    "0s".into()
}
fn default_sample_rate() -> f64 {
    0.1
}
fn default_knows_after() -> String {
    "0s".into()
}

/// A validated `[judge]`.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeSpec {
    pub accuracy: f64,
    pub latency_ms: i64,
    pub sample_rate: f64,
    /// Per change (in scenario order): how long after its effective time the judge knows it
    /// (`None` = never).
    pub knows_after_ms: Vec<Option<i64>>,
}

fn knows(s: &str) -> Result<Option<i64>, String> {
    if s.trim() == "never" {
        return Ok(None);
    }
    parse_duration(s)
        .map(Some)
        .map_err(|e| format!("{e}; or `never`"))
}

impl RawJudge {
    /// Validates against the scenario's change ids; errors are `(field, message)`.
    pub fn validate(&self, change_ids: &[&str]) -> Result<JudgeSpec, (String, String)> {
        let bad = |f: &str, m: String| Err((format!("judge.{f}"), m));
        for (f, p) in [
            ("accuracy", self.accuracy),
            ("sample_rate", self.sample_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(f, format!("{p} is not a probability (0 to 1)"));
            }
        }
        let latency_ms = match parse_duration(&self.latency) {
            Ok(ms) if (0..=60_000).contains(&ms) => ms,
            Ok(_) => return bad("latency", "must be at most 60s".into()),
            Err(e) => return bad("latency", e),
        };
        let default = match knows(&self.knows_after) {
            Ok(k) => k,
            Err(e) => return bad("knows_after", e),
        };
        for id in self.changes.keys() {
            if !change_ids.contains(&id.as_str()) {
                return bad("changes", format!("unknown change `{id}`"));
            }
        }
        let mut knows_after_ms = Vec::new();
        for id in change_ids {
            knows_after_ms.push(match self.changes.get(*id) {
                Some(s) => match knows(s) {
                    Ok(k) => k,
                    Err(e) => return bad(&format!("changes.{id}"), e),
                },
                None => default,
            });
        }
        Ok(JudgeSpec {
            accuracy: self.accuracy,
            latency_ms,
            sample_rate: self.sample_rate,
            knows_after_ms,
        })
    }
}

/// Stream purpose of the judge's accuracy draws.
const PURPOSE_JUDGE: u64 = 0x006a_7564_6765;

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The verdict object (`{verdict, reason, correction}`) the simulated judge gives: `outdated`
/// when the reply states something a change it knows of at `today` makes wrong (the reason
/// names the change, the correction is the change's `right`), else `ok`; flipped with
/// probability `1 - accuracy`, drawn from (seed, interaction id).
pub fn verdict(s: &Scenario, spec: &JudgeSpec, q: &JudgeQuestion, subtopic: Option<&str>) -> Value {
    let today = chrono::DateTime::parse_from_rfc3339(&q.today)
        .map(|d| d.timestamp_millis())
        .unwrap_or(s.start_ms);
    let text = |k: &str| q.context[k].as_str().unwrap_or_default();
    let at = Slice {
        topic: text("topic"),
        subtopic: subtopic.unwrap_or_default(),
        locale: text("locale"),
        jurisdiction: text("jurisdiction"),
        at_ms: today,
    };
    let known = wrong_by(s, &at, &q.reply).into_iter().find(|i| {
        let (Some(c), Some(Some(after))) = (s.changes.get(*i), spec.knows_after_ms.get(*i)) else {
            return false;
        };
        today >= c.effective_ms.saturating_add(*after)
    });
    let mut rng = Rng::derive(s.seed, &[PURPOSE_JUDGE, fnv(&q.interaction_id)]);
    let right = rng.chance(spec.accuracy);
    match (known.and_then(|i| s.changes.get(i)), right) {
        (Some(c), true) => json!({"verdict": "outdated",
            "reason": format!("no longer true since {}: {}", keel_core::clock::format_ms(c.effective_ms), c.description),
            "correction": (!c.right.is_empty()).then(|| c.right.clone())}),
        (None, false) => json!({"verdict": "outdated",
            "reason": "this looks out of date", "correction": null}),
        _ => {
            json!({"verdict": "ok", "reason": "consistent with what I know today", "correction": null})
        }
    }
}

/// The gateway config the runner appends: an upstream for the judge (the scenario model) and
/// `[judge]`. The timeout leaves room for the configured latency, so no call times out.
pub fn gateway_toml(spec: &JudgeSpec, model_url: &str) -> String {
    let timeout = (spec.latency_ms * 4).max(30_000);
    format!(
        "[[upstreams]]\nname = \"scenario-judge\"\nbase_url = {model_url:?}\nmodels = [\"sim-judge\"]\n\
         timeout_ms = {timeout}\nretries = 0\n\
         [judge]\nupstream = \"scenario-judge\"\nmodel = \"sim-judge\"\nsample_rate = {}\nboost_rate = {}\n\
         requests_per_minute = 100000\ntokens_per_day = 1000000000000\ntimeout_ms = {timeout}\nretries = 0\n\
         max_age_ms = 1000000000000\n",
        spec.sample_rate,
        (spec.sample_rate * 2.0).min(1.0),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(knows_after: &str, changes: &[(&str, &str)]) -> RawJudge {
        RawJudge {
            accuracy: 1.0,
            latency: "0s".into(),
            sample_rate: 0.1,
            knows_after: knows_after.into(),
            changes: changes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn check(r: RawJudge, expected: Result<Vec<Option<i64>>, &str>) {
        match (r.validate(&["a", "b"]), expected) {
            (Ok(s), Ok(k)) => assert_eq!(s.knows_after_ms, k),
            (Err((f, m)), Err(want)) => assert!(f.contains(want) || m.contains(want), "{f}: {m}"),
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }

    #[test]
    fn knows_after_per_change_with_a_default() {
        check(raw("0s", &[]), Ok(vec![Some(0), Some(0)]));
        check(
            raw("6h", &[("b", "never")]),
            Ok(vec![Some(6 * 3_600_000), None]),
        );
        check(
            raw("never", &[("a", "1d")]),
            Ok(vec![Some(86_400_000), None]),
        );
        check(raw("soon", &[]), Err("judge.knows_after"));
        check(raw("0s", &[("c", "1h")]), Err("unknown change `c`"));
        check(raw("0s", &[("a", "x")]), Err("judge.changes.a"));
        let mut r = raw("0s", &[]);
        r.accuracy = 1.5;
        check(r, Err("judge.accuracy"));
    }

    fn with_judge(extra: &str) -> Result<Scenario, crate::SimError> {
        let text = crate::scenario::BUNDLED
            .iter()
            .find(|(n, _)| *n == "leveraged-products")
            .map(|(_, t)| *t)
            .unwrap();
        Scenario::parse(&format!("{text}\n{extra}"), "with-judge")
    }

    #[test]
    fn a_scenario_with_a_judge_parses_and_one_without_has_none() {
        for (name, _) in crate::scenario::BUNDLED {
            assert!(Scenario::load(name).unwrap().judge.is_none(), "{name}");
        }
        let s = with_judge(
            "[judge]\naccuracy = 0.9\nlatency = \"1s\"\nsample_rate = 0.05\nknows_after = \"6h\"\n",
        )
        .unwrap();
        let j = s.judge.unwrap();
        assert_eq!(
            (j.accuracy, j.latency_ms, j.sample_rate),
            (0.9, 1_000, 0.05)
        );
        assert_eq!(j.knows_after_ms, vec![Some(6 * 3_600_000)]);
        let s = with_judge("[judge]\n[judge.changes]\ngb-leveraged-ban = \"never\"\n").unwrap();
        assert_eq!(s.judge.unwrap().knows_after_ms, vec![None]);
        let e = with_judge("[judge]\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = with_judge("[judge]\nsample_rate = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("judge.sample_rate"), "{e}");
    }

    fn question(s: &Scenario, at_ms: i64, jurisdiction: &str, id: &str) -> JudgeQuestion {
        let st = &s.topics[0].subtopics[0];
        JudgeQuestion {
            today: keel_core::clock::format_ms(at_ms),
            interaction_id: id.into(),
            context: json!({"tenant": "sim", "locale": "en-GB", "jurisdiction": jurisdiction, "topic": s.topics[0].id}),
            question: st.prompts["en"][0].clone(),
            reply: st.answers["en"].clone(),
            rules: vec![],
            facts: vec![],
        }
    }

    #[test]
    fn verdicts_follow_the_truth_the_judge_knows() {
        let s = with_judge("[judge]\naccuracy = 1.0\nknows_after = \"6h\"\n").unwrap();
        let spec = s.judge.clone().unwrap();
        let c = &s.changes[0];
        let sub = Some(s.topics[0].subtopics[0].id.as_str());
        let v = |at: i64, j: &str| verdict(&s, &spec, &question(&s, at, j, "ix1"), sub);
        assert_eq!(v(c.effective_ms - 1, "GB")["verdict"], "ok");
        // In force but not yet known to the judge.
        assert_eq!(v(c.effective_ms + 3_600_000, "GB")["verdict"], "ok");
        let known = v(c.effective_ms + 6 * 3_600_000, "GB");
        assert_eq!(known["verdict"], "outdated");
        assert_eq!(known["correction"], c.right.as_str());
        // Another jurisdiction keeps the old truth.
        assert_eq!(v(c.effective_ms + 6 * 3_600_000, "US")["verdict"], "ok");
        // A judge that never learns of it.
        let mut never = spec.clone();
        never.knows_after_ms = vec![None];
        let q = question(&s, c.effective_ms + 86_400_000, "GB", "ix1");
        assert_eq!(verdict(&s, &never, &q, sub)["verdict"], "ok");
        // Accuracy: a wrong judge says the opposite; the draw is per interaction and seeded.
        let mut wrong = spec.clone();
        wrong.accuracy = 0.0;
        assert_eq!(verdict(&s, &wrong, &q, sub)["verdict"], "ok");
        let early = question(&s, c.effective_ms - 1, "GB", "ix1");
        assert_eq!(verdict(&s, &wrong, &early, sub)["verdict"], "outdated");
        let mut half = spec.clone();
        half.accuracy = 0.5;
        let draws: Vec<Value> = (0..200)
            .map(|i| {
                verdict(
                    &s,
                    &half,
                    &question(&s, c.effective_ms - 1, "GB", &format!("ix{i}")),
                    sub,
                )["verdict"]
                    .clone()
            })
            .collect();
        let again: Vec<Value> = (0..200)
            .map(|i| {
                verdict(
                    &s,
                    &half,
                    &question(&s, c.effective_ms - 1, "GB", &format!("ix{i}")),
                    sub,
                )["verdict"]
                    .clone()
            })
            .collect();
        assert_eq!(draws, again);
        let flipped = draws.iter().filter(|d| **d == "outdated").count();
        assert!(
            (60..=140).contains(&flipped),
            "{flipped} of 200 flipped at accuracy 0.5"
        );
    }

    #[tokio::test]
    async fn the_scenario_model_answers_judge_requests() {
        let s = with_judge("[judge]\naccuracy = 1.0\n").unwrap();
        let server = crate::model::ModelServer::start(&s, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let cfg: keel_loop::judge::JudgeConfig =
            serde_json::from_value(json!({"upstream": "scenario-judge", "model": "sim-judge"}))
                .unwrap();
        let q = question(&s, s.changes[0].effective_ms, "GB", "ix1");
        let body = keel_loop::judge::request_body(&cfg, &q);
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/chat/completions", server.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let v = keel_loop::judge::parse_response(&answer).unwrap();
        assert_eq!(v.kind, keel_loop::judge::VerdictKind::Outdated);
        assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > 0);
        // Ordinary chat requests still get the frozen answer.
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": q.question}]});
        let a: Value = reqwest::Client::new()
            .post(format!("{}/chat/completions", server.base_url()))
            .json(&chat)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(a["choices"][0]["message"]["content"], q.reply.as_str());
    }
}
