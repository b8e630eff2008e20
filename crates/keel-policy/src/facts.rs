//! Facts with effective dates: the typed [`Fact`] a registry keeps, validation of a new version
//! against a key's history, and [`FactIndex`], the pure checker that finds statements of a
//! subject with a value in the same sentence and compares them with the fact in force.
//!
//! The index is built once from every version of every fact (a few milliseconds for thousands of
//! facts); a check filters by the request's scope and `context.now`, so a version scheduled for
//! next month takes over by itself when the caller's clock gets there. No IO, no clock reads.
//!
//! Specificity: a longer subject term wins over a shorter one that overlaps it
//! (leftmost-longest), and among facts in force for the same term the one with the narrowest
//! scope wins (tenant > jurisdiction subdivision > jurisdiction = topic > locale), so an
//! exception keeps its own value while the general rule changes.
//!
//! Split along its seams: [`model`] (the typed fact and its history), `reader` (values in
//! text), `format` (comparing and writing a correction) and [`index`] (the checker).

mod format;
pub mod index;
pub mod model;
mod reader;
#[cfg(test)]
mod tests;

pub use index::{FactIndex, SharedFacts};
pub use model::{
    in_force_at, parse_instant, Fact, FactScope, FactScopeExt, FactValue, Unit, FACT_KINDS,
    FACT_WINDOW, MAX_TERM_CHARS, MAX_VALUE_CHARS,
};
