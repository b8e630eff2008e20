//! The people of a run: simulated users (one conversation each, graded, with their
//! reactions), support staff answering handoffs and reviewers working the queue.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{chat, Client, Keys};
use super::operator::{follow_rollouts, operator_works, receive};
use super::{RunSpec, RunState, Strategy};
use crate::grade::{self, Grade, Slice};
use crate::metrics::Served;
use crate::model::ModelIndex;
use crate::rng::Rng;
use crate::scenario::{by_locale, Scenario};
use crate::traffic::{Conversation, REACTIONS, REVIEWS};
use crate::update;
use crate::SimError;

/// What one conversation produced.
pub(super) struct ConvOutcome {
    pub(super) served: Vec<Served>,
    pub(super) handoff: Option<String>,
    /// Feedback bodies, sent once the tick's interactions are committed (async durability
    /// answers before the commit).
    pub(super) feedback: Vec<Value>,
}

/// What a simulated client task owns: the HTTP client, the keys, the scenario, the seed and
/// the model's index.
#[derive(Clone)]
pub(super) struct ConvEnv {
    pub(super) c: Client,
    pub(super) keys: Arc<Keys>,
    pub(super) s: Arc<Scenario>,
    pub(super) seed: u64,
    pub(super) model: Arc<ModelIndex>,
}

/// One conversation: its turns in order, each graded, each with the user's reaction.
pub(super) async fn converse(
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

/// What the people of a run (support staff, reviewers, the operator) work with.
#[derive(Clone, Copy)]
pub(super) struct Staff<'a> {
    pub(super) c: &'a Client,
    pub(super) keys: &'a Keys,
    pub(super) spec: &'a RunSpec,
    pub(super) seed: u64,
    /// The gateway serves the update pipeline's API (`/api/proposals`).
    pub(super) update_api: bool,
}

/// People: support staff answer handoffs; in `continual`, reviewers work the queue and the
/// operator turns their suggestions into updates.
pub(super) async fn humans(
    staff: &Staff<'_>,
    tick: u64,
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
    let on_duty = s.reviewers.on_duty(now) && s.reviewers.count > 0;
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
    }
    if on_duty {
        reviewers_work(staff, tick, now, st).await?;
    }
    operator_works(staff, now, st).await
}

/// Reviewers label the open items past their latency, up to their capacity this tick; a right
/// label on a now-wrong reply carries the change's update to the operator's desk.
async fn reviewers_work(
    staff: &Staff<'_>,
    tick: u64,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let Staff {
        c,
        keys,
        spec,
        seed,
        ..
    } = *staff;
    let s: &Scenario = &spec.scenario;
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
                       "suggestion": update::suggestion(&change.update, &reply, &s.tenant)})
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
            receive(st, ch, &id, &label["suggestion"], now);
        }
    }
    Ok(())
}
