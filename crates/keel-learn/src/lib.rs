//! Learned monitors: classifiers that keep learning from every completed review and score new
//! replies per label (`outdated`, `violation`, `wrong_answer`, `violation.<category>`).
//!
//! Pure: no IO, no clock. [`features`] turns text into hashed n-gram features (character
//! 2–3-grams for Japanese/Chinese runs, word 1–2-grams for spaced scripts); [`Model`] holds one
//! class-weighted online logistic regression (AdaGrad) per label, evaluates each example before
//! training on it (prequential precision/recall over a window), and serialises to a versioned
//! JSON state; [`Scorer`] is the read-only snapshot the request path uses. The design and the
//! numbers are in `docs/learned.md` at the repository root.

pub mod features;
pub mod fingerprint;
pub mod model;
pub mod state;

pub use fingerprint::{answer_ids, fingerprint, Fingerprint};
pub use model::{
    Config, Example, LabelStatus, LearnOutcome, Model, Scorer, BASE_LABELS, FORMAT_VERSION,
    VERDICTS,
};

/// What can go wrong loading or feeding a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LearnError {
    #[error("invalid learn config: {0}")]
    Config(String),
    #[error("unknown verdict `{0}`")]
    Verdict(String),
    #[error("learned model state is corrupt: {0}")]
    Corrupt(String),
    #[error("learned model state has format version {found}; this build reads {expected} (run `keel learn rebuild`)")]
    Version { found: u64, expected: u32 },
    #[error("learn config changed since the model was trained (run `keel learn rebuild`)")]
    ConfigChanged,
}

impl LearnError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            LearnError::Config(_) | LearnError::Verdict(_) => 400,
            LearnError::Corrupt(_) | LearnError::Version { .. } | LearnError::ConfigChanged => 500,
        }
    }
}

#[cfg(test)]
mod tests;
