//! Per-label online logistic regression over hashed features (AdaGrad, class-weighted), with
//! prequential evaluation: every example is scored before the model trains on it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::features::{self, Feature};
use crate::LearnError;

/// Format of the persisted state; bumped on any change to features, update rule or layout.
pub const FORMAT_VERSION: u32 = 1;

/// Labels every model has, from the review verdict. `violation.<category>` labels are added
/// as categories appear (up to [`Config::max_labels`] labels in all).
pub const BASE_LABELS: [&str; 3] = ["outdated", "violation", "wrong_answer"];

/// Review verdicts a model accepts (`ok` is negative for every label).
pub const VERDICTS: [&str; 4] = ["ok", "violation", "wrong_answer", "outdated"];

/// Learning settings; part of the persisted state (a model only resumes under the same ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Hash table size is `2^bits` buckets per label (8..=24).
    pub bits: u32,
    /// AdaGrad step size.
    pub learning_rate: f32,
    /// Positives and negatives each a label needs before its score is available.
    pub min_examples: u32,
    /// How many recent prequential predictions per label precision/recall are computed over.
    pub window: u32,
    /// At most this many labels (base labels included): later categories are not learned.
    pub max_labels: u32,
    /// Upper bound of the class weight given to the rarer class.
    pub max_class_weight: f32,
    /// Text beyond this many bytes is ignored (bounds scoring cost).
    pub max_text_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bits: 18,
            learning_rate: 0.3,
            min_examples: 10,
            window: 200,
            max_labels: 16,
            max_class_weight: 10.0,
            max_text_bytes: 8192,
        }
    }
}

impl Config {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), LearnError> {
        let bad = |m: &str| Err(LearnError::Config(m.to_string()));
        if !(8..=24).contains(&self.bits) {
            return bad("bits must be 8..=24");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate must be positive");
        }
        if self.min_examples == 0 {
            return bad("min_examples must be at least 1");
        }
        if self.window == 0 || self.window > 100_000 {
            return bad("window must be 1..=100000");
        }
        if (self.max_labels as usize) < BASE_LABELS.len() || self.max_labels > 64 {
            return bad("max_labels must be 3..=64");
        }
        if !(self.max_class_weight.is_finite() && self.max_class_weight >= 1.0) {
            return bad("max_class_weight must be at least 1");
        }
        if self.max_text_bytes == 0 {
            return bad("max_text_bytes must be positive");
        }
        Ok(())
    }

    fn buckets(&self) -> usize {
        1usize << self.bits
    }
}

/// One labelled example: the reply text and the reviewer's verdict.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    pub text: &'a str,
    pub verdict: &'a str,
    pub category: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabelModel {
    pub(crate) name: String,
    pub(crate) positives: u64,
    pub(crate) negatives: u64,
    /// Weights, bias last (`buckets + 1`).
    pub(crate) w: Vec<f32>,
    /// AdaGrad's sums of squared gradients, same layout.
    pub(crate) g: Vec<f32>,
    /// Recent prequential outcomes: bit 0 = predicted positive, bit 1 = actually positive.
    pub(crate) window: VecDeque<u8>,
    /// Prequential predictions made over the model's life.
    pub(crate) evaluated: u64,
}

impl LabelModel {
    fn new(name: String, buckets: usize) -> Self {
        LabelModel {
            name,
            positives: 0,
            negatives: 0,
            w: vec![0.0; buckets + 1],
            g: vec![0.0; buckets + 1],
            window: VecDeque::new(),
            evaluated: 0,
        }
    }

    fn available(&self, min: u32) -> bool {
        self.positives >= u64::from(min) && self.negatives >= u64::from(min)
    }
}

/// The probability of the positive class for `feats` under weights `w` (bias last).
pub(crate) fn predict(w: &[f32], feats: &[Feature]) -> f32 {
    let mut z = w.last().copied().unwrap_or(0.0);
    for f in feats {
        z += w.get(f.index as usize).copied().unwrap_or(0.0) * f.value;
    }
    sigmoid(z)
}

fn sigmoid(z: f32) -> f32 {
    let z = z.clamp(-30.0, 30.0);
    1.0 / (1.0 + (-z).exp())
}

/// Sorts by bucket and merges duplicates (a fixed order, so updates are reproducible).
fn merge(mut feats: Vec<Feature>) -> Vec<Feature> {
    feats.sort_by_key(|f| f.index);
    let mut out: Vec<Feature> = Vec::with_capacity(feats.len());
    for f in feats {
        match out.last_mut() {
            Some(last) if last.index == f.index => last.value += f.value,
            _ => out.push(f),
        }
    }
    out
}

/// A label's health: counts, prequential precision/recall over the window, availability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelStatus {
    pub label: String,
    pub positives: u64,
    pub negatives: u64,
    /// Whether scores are served (both classes have at least `min_examples`).
    pub available: bool,
    /// Prequential predictions in the window (the most recent ones).
    pub evaluated: u64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub true_negatives: u64,
    /// TP / (TP + FP) over the window; `None` when nothing was predicted positive.
    pub precision: Option<f64>,
    /// TP / (TP + FN) over the window; `None` when the window holds no positive.
    pub recall: Option<f64>,
}

/// The online model: one binary classifier per label, plus the cursor of the event log it has
/// learned up to (set by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub(crate) config: Config,
    pub(crate) labels: Vec<LabelModel>,
    /// Examples learned from.
    pub(crate) examples: u64,
    /// Sequence number of the last event the caller fed (0 = none).
    pub cursor: i64,
}

/// What one example did.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnOutcome {
    /// `(label, score before training, actual)` for every label that was available.
    pub predictions: Vec<(String, f32, bool)>,
}

impl Model {
    /// An empty model with the base labels.
    pub fn new(config: Config) -> Result<Self, LearnError> {
        config.validate()?;
        let buckets = config.buckets();
        Ok(Model {
            labels: BASE_LABELS
                .iter()
                .map(|l| LabelModel::new(l.to_string(), buckets))
                .collect(),
            config,
            examples: 0,
            cursor: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Examples learned from.
    pub fn examples(&self) -> u64 {
        self.examples
    }

    /// Label names, base labels first, then categories in the order they appeared.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| l.name.as_str())
    }

    fn features(&self, text: &str) -> Vec<Feature> {
        features::features(text, self.config.bits, self.config.max_text_bytes as usize)
    }

    /// Learns from one review: scores it first (prequential evaluation, for labels whose score
    /// is available), then takes one class-weighted AdaGrad step per label. Deterministic: the
    /// same sequence of examples gives bit-identical weights.
    pub fn learn(&mut self, ex: &Example<'_>) -> Result<LearnOutcome, LearnError> {
        self.learn_weighted(ex, 1.0)
    }

    /// [`Model::learn`] with the example's gradient scaled by `weight` (0 < weight ≤ 1): a
    /// weaker label than a reviewer's, such as a judge model's verdict. Only full-weight
    /// examples enter the prequential precision/recall (which measures agreement with
    /// reviewers). `weight = 1.0` is exactly [`Model::learn`].
    pub fn learn_weighted(
        &mut self,
        ex: &Example<'_>,
        weight: f32,
    ) -> Result<LearnOutcome, LearnError> {
        if !(weight.is_finite() && weight > 0.0 && weight <= 1.0) {
            return Err(LearnError::Config(format!(
                "an example weight must be in (0, 1], not {weight}"
            )));
        }
        if !VERDICTS.contains(&ex.verdict) {
            return Err(LearnError::Verdict(ex.verdict.to_string()));
        }
        let category = if ex.verdict == "violation" {
            ex.category.filter(|c| !c.is_empty())
        } else {
            None
        };
        if let Some(c) = category {
            let name = format!("violation.{c}");
            if !self.labels.iter().any(|l| l.name == name)
                && self.labels.len() < self.config.max_labels as usize
            {
                self.labels
                    .push(LabelModel::new(name, self.config.buckets()));
            }
        }
        let feats = merge(self.features(ex.text));
        let min = self.config.min_examples;
        let window = self.config.window as usize;
        let eta = self.config.learning_rate;
        let max_cw = self.config.max_class_weight;
        let mut predictions = Vec::new();
        for label in &mut self.labels {
            let y = match label.name.strip_prefix("violation.") {
                Some(c) => category == Some(c),
                None => label.name == ex.verdict,
            };
            let p = predict(&label.w, &feats);
            if label.available(min) && weight >= 1.0 {
                label
                    .window
                    .push_back(u8::from(p >= 0.5) | (u8::from(y) << 1));
                while label.window.len() > window {
                    label.window.pop_front();
                }
                label.evaluated += 1;
                predictions.push((label.name.clone(), p, y));
            }
            // Class weight: the rarer class so far counts more (bounded), from counts before
            // this example (+1 smoothing).
            let (same, other) = if y {
                (label.positives, label.negatives)
            } else {
                (label.negatives, label.positives)
            };
            let cw = ((other as f32 + 1.0) / (same as f32 + 1.0)).clamp(1.0, max_cw);
            let err = (p - f32::from(u8::from(y))) * cw * weight;
            let bias = label.w.len() - 1;
            let step = |w: &mut Vec<f32>, g: &mut Vec<f32>, i: usize, x: f32| {
                let gi = err * x;
                if gi == 0.0 {
                    return;
                }
                if let (Some(wi), Some(gsum)) = (w.get_mut(i), g.get_mut(i)) {
                    *gsum += gi * gi;
                    *wi -= eta * gi / gsum.sqrt();
                }
            };
            for f in &feats {
                step(&mut label.w, &mut label.g, f.index as usize, f.value);
            }
            step(&mut label.w, &mut label.g, bias, 1.0);
            if y {
                label.positives += 1;
            } else {
                label.negatives += 1;
            }
        }
        self.examples += 1;
        Ok(LearnOutcome { predictions })
    }

    /// Scores per label (`None` = unavailable: too few examples of either class).
    pub fn score(&self, text: &str) -> Vec<(&str, Option<f32>)> {
        let feats = self.features(text);
        let min = self.config.min_examples;
        self.labels
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.available(min).then(|| predict(&l.w, &feats)),
                )
            })
            .collect()
    }

    /// Per-label counts and prequential quality.
    pub fn status(&self) -> Vec<LabelStatus> {
        let min = self.config.min_examples;
        self.labels
            .iter()
            .map(|l| {
                let mut c = [0u64; 4];
                for o in &l.window {
                    if let Some(x) = c.get_mut(usize::from(*o & 3)) {
                        *x += 1;
                    }
                }
                // index: predicted | actual << 1
                let (tn, fp, fn_, tp) = (c[0], c[1], c[2], c[3]);
                LabelStatus {
                    label: l.name.clone(),
                    positives: l.positives,
                    negatives: l.negatives,
                    available: l.available(min),
                    evaluated: l.window.len() as u64,
                    true_positives: tp,
                    false_positives: fp,
                    false_negatives: fn_,
                    true_negatives: tn,
                    precision: (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64),
                    recall: (tp + fn_ > 0).then(|| tp as f64 / (tp + fn_) as f64),
                }
            })
            .collect()
    }

    /// A read-only copy for the request path: weights of available labels only.
    pub fn scorer(&self) -> Scorer {
        let min = self.config.min_examples;
        Scorer {
            bits: self.config.bits,
            max_text_bytes: self.config.max_text_bytes as usize,
            labels: self
                .labels
                .iter()
                .map(|l| ScorerLabel {
                    name: l.name.clone(),
                    weights: l.available(min).then(|| l.w.clone()),
                })
                .collect(),
        }
    }
}

struct ScorerLabel {
    name: String,
    weights: Option<Vec<f32>>,
}

/// Scores texts with a snapshot of a [`Model`]; cheap to share behind an `Arc`.
pub struct Scorer {
    bits: u32,
    max_text_bytes: usize,
    labels: Vec<ScorerLabel>,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("labels", &self.labels.len())
            .finish()
    }
}

impl Scorer {
    /// A scorer with no labels available (before any model exists).
    pub fn empty() -> Self {
        Scorer {
            bits: 8,
            max_text_bytes: 0,
            labels: BASE_LABELS
                .iter()
                .map(|l| ScorerLabel {
                    name: l.to_string(),
                    weights: None,
                })
                .collect(),
        }
    }

    /// Scores per label, in the model's label order (`None` = unavailable).
    pub fn score(&self, text: &str) -> Vec<(&str, Option<f32>)> {
        if self.labels.iter().all(|l| l.weights.is_none()) {
            return self
                .labels
                .iter()
                .map(|l| (l.name.as_str(), None))
                .collect();
        }
        let feats = features::features(text, self.bits, self.max_text_bytes);
        self.labels
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.weights.as_ref().map(|w| predict(w, &feats)),
                )
            })
            .collect()
    }

    /// Label names.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| l.name.as_str())
    }
}
