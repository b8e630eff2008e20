//! The persisted, versioned model state: JSON with each label's touched buckets packed as
//! base64 of little-endian `(u32 index, f32 weight, f32 adagrad sum)` triples (12 bytes per
//! touched bucket, so the size grows with the vocabulary seen, not with `2^bits`).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Config, LabelModel, Model, FORMAT_VERSION};
use crate::LearnError;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateV1 {
    format_version: u32,
    config: Config,
    cursor: i64,
    examples: u64,
    labels: Vec<LabelV1>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelV1 {
    name: String,
    positives: u64,
    negatives: u64,
    evaluated: u64,
    /// Recent prequential outcomes, one digit each (`predicted + 2 × actual`).
    window: String,
    /// Touched buckets in index order.
    touched: u64,
    weights: String,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Model {
    /// The state as JSON (deterministic: equal models give equal bytes).
    pub fn to_json(&self) -> String {
        let labels = self
            .labels
            .iter()
            .map(|l| {
                let mut packed = Vec::new();
                let mut touched = 0u64;
                for (i, (w, g)) in l.w.iter().zip(&l.g).enumerate() {
                    if *g != 0.0 {
                        touched += 1;
                        packed.extend_from_slice(&(i as u32).to_le_bytes());
                        packed.extend_from_slice(&w.to_bits().to_le_bytes());
                        packed.extend_from_slice(&g.to_bits().to_le_bytes());
                    }
                }
                LabelV1 {
                    name: l.name.clone(),
                    positives: l.positives,
                    negatives: l.negatives,
                    evaluated: l.evaluated,
                    window: l
                        .window
                        .iter()
                        .map(|o| char::from(b'0' + (o & 3)))
                        .collect(),
                    touched,
                    weights: B64.encode(&packed),
                }
            })
            .collect();
        let state = StateV1 {
            format_version: FORMAT_VERSION,
            config: self.config.clone(),
            cursor: self.cursor,
            examples: self.examples,
            labels,
        };
        serde_json::to_string(&state).unwrap_or_default()
    }

    /// Restores a state written by [`Model::to_json`]. Fails on another format version, on
    /// corrupt data, and when `config` differs from the one the state was trained with (the
    /// model must then be rebuilt from the event history).
    pub fn from_json(json: &str, config: &Config) -> Result<Self, LearnError> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| LearnError::Corrupt(e.to_string()))?;
        let found = v["format_version"].as_u64().unwrap_or(0);
        if found != u64::from(FORMAT_VERSION) {
            return Err(LearnError::Version {
                found,
                expected: FORMAT_VERSION,
            });
        }
        let state: StateV1 =
            serde_json::from_value(v).map_err(|e| LearnError::Corrupt(e.to_string()))?;
        if &state.config != config {
            return Err(LearnError::ConfigChanged);
        }
        config.validate()?;
        let buckets = 1usize << config.bits;
        let mut labels = Vec::with_capacity(state.labels.len());
        for l in state.labels {
            let bytes = B64
                .decode(l.weights.as_bytes())
                .map_err(|e| LearnError::Corrupt(format!("label {}: {e}", l.name)))?;
            if bytes.len() % 12 != 0 || (bytes.len() / 12) as u64 != l.touched {
                return Err(LearnError::Corrupt(format!(
                    "label {}: weights length",
                    l.name
                )));
            }
            let mut w = vec![0.0f32; buckets + 1];
            let mut g = vec![0.0f32; buckets + 1];
            for chunk in bytes.chunks_exact(12) {
                let word = |k: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&chunk[k..k + 4]);
                    u32::from_le_bytes(b)
                };
                let i = word(0) as usize;
                if i > buckets {
                    return Err(LearnError::Corrupt(format!(
                        "label {}: bucket {i} out of range",
                        l.name
                    )));
                }
                w[i] = f32::from_bits(word(4));
                g[i] = f32::from_bits(word(8));
            }
            let mut window = std::collections::VecDeque::with_capacity(l.window.len());
            for c in l.window.bytes() {
                if !(b'0'..=b'3').contains(&c) {
                    return Err(LearnError::Corrupt(format!("label {}: window", l.name)));
                }
                window.push_back(c - b'0');
            }
            labels.push(LabelModel {
                name: l.name,
                positives: l.positives,
                negatives: l.negatives,
                w,
                g,
                window,
                evaluated: l.evaluated,
            });
        }
        Ok(Model {
            config: state.config,
            labels,
            examples: state.examples,
            cursor: state.cursor,
        })
    }

    /// Hex SHA-256 of [`Model::to_json`]: equal digests mean bit-identical models.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }
}
