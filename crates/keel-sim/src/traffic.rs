//! Simulated traffic: each tick's conversations drawn from the scenario with a seeded stream of
//! its own, so a tick's requests never depend on another tick's draws or on timing.

use crate::rng::Rng;
use crate::scenario::{by_locale, Scenario};

/// Stream ids for [`Rng::derive`].
pub const ARRIVALS: u64 = 1;
pub const REACTIONS: u64 = 2;
pub const REVIEWS: u64 = 3;

/// One user turn: which sub-topic the user asks about, in which words.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub subtopic: usize,
    pub prompt: String,
    pub stream: bool,
}

/// A conversation started in a tick (all its turns are sent in that tick, one after another).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub user: String,
    pub tick: u64,
    pub segment: usize,
    pub topic: usize,
    pub turns: Vec<Turn>,
}

/// The conversations of `tick`, deterministic for (`seed`, `tick`).
pub fn conversations(s: &Scenario, seed: u64, tick: u64) -> Vec<Conversation> {
    let mut rng = Rng::derive(seed, &[tick, ARRIVALS]);
    let n = rng.poisson(s.traffic.conversations_per_tick);
    let seg_weights: Vec<f64> = s.traffic.segments.iter().map(|g| g.weight).collect();
    (0..n)
        .map(|i| {
            let segment = rng.weighted(&seg_weights);
            let seg = &s.traffic.segments[segment];
            let topic_weights: Vec<f64> = s
                .topics
                .iter()
                .map(|t| {
                    if seg.topics.is_empty() {
                        t.weight
                    } else {
                        seg.topics.get(&t.id).copied().unwrap_or(0.0)
                    }
                })
                .collect();
            let topic = rng.weighted(&topic_weights);
            let tp = &s.topics[topic];
            let sub_weights: Vec<f64> = tp.subtopics.iter().map(|x| x.weight).collect();
            let n_turns = rng.range(s.traffic.turns[0], s.traffic.turns[1]);
            let turns = (0..n_turns)
                .map(|_| {
                    let subtopic = rng.weighted(&sub_weights);
                    let prompts = by_locale(&tp.subtopics[subtopic].prompts, &seg.locale)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    let k = rng.range(0, prompts.len().saturating_sub(1) as u64) as usize;
                    Turn {
                        subtopic,
                        prompt: prompts.get(k).cloned().unwrap_or_default(),
                        stream: rng.chance(s.traffic.stream_share),
                    }
                })
                .collect();
            Conversation {
                id: format!("c{tick}-{i}"),
                user: format!("u{}", rng.range(0, 9_999)),
                tick,
                segment,
                topic,
                turns,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_deterministic_per_seed_and_tick() {
        let s = Scenario::load("leveraged-products").unwrap();
        let a = conversations(&s, 1, 5);
        assert_eq!(a, conversations(&s, 1, 5));
        assert_ne!(a, conversations(&s, 2, 5));
        // Drawing other ticks first changes nothing.
        let _ = conversations(&s, 1, 4);
        assert_eq!(a, conversations(&s, 1, 5));
        assert!(a.iter().all(|c| !c.turns.is_empty()));
        assert!(a
            .iter()
            .flat_map(|c| &c.turns)
            .all(|t| !t.prompt.is_empty()));
    }
}
