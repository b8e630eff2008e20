//! The `keel learn` verbs: `status` (per label: examples, prequential precision/recall,
//! availability) and `rebuild` (retrain from the event history, compare with the online model,
//! persist).

use crate::open_store;
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use crate::{load, ConfigArg};

#[derive(Subcommand)]
pub(crate) enum LearnVerb {
    /// Per label: examples (positive/negative), prequential precision and recall over the most
    /// recent reviews, whether the score is available to policies.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Retrain from the event history; say whether the result is bit-identical to the online
    /// model, and persist it.
    Rebuild {
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{:.3}", x))
}

/// The status as a table (one row per label).
pub(crate) fn table(status: &Value) -> String {
    let mut out = format!(
        "examples {}  cursor {}  min_examples {}  window {}\n",
        status["examples"], status["cursor"], status["min_examples"], status["window"]
    );
    out.push_str(&format!(
        "{:<28} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
        "label", "pos", "neg", "evaluated", "precision", "recall", "available"
    ));
    for l in status["labels"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<28} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
            l["label"].as_str().unwrap_or("?"),
            l["positives"].to_string(),
            l["negatives"].to_string(),
            l["evaluated"].to_string(),
            pct(&l["precision"]),
            pct(&l["recall"]),
            if l["available"].as_bool() == Some(true) {
                "yes"
            } else {
                "unavailable"
            },
        ));
    }
    out
}

pub(crate) async fn run(verb: LearnVerb) -> Result<()> {
    match verb {
        LearnVerb::Status { config, json } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = keel_service::learn::status(store.as_ref(), &config.learn).await;
            store.close().await;
            let status = result?;
            if status["examples"] == 0 {
                eprintln!("no reviews learned yet: `keel serve` learns from completed reviews (`keel learn rebuild` retrains from the history)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", table(&status));
            }
            Ok(())
        }
        LearnVerb::Rebuild { config } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = keel_service::learn::rebuild(store.as_ref(), &config.learn).await;
            store.close().await;
            let r = result?;
            eprintln!(
                "retrained on {} reviews up to seq {}; persisted",
                r.examples, r.cursor
            );
            match &r.online_digest {
                Some(d) if r.identical => {
                    println!(
                        "identical: rebuilt model equals the online model at seq {} (sha256 {d})",
                        r.compared_at
                    )
                }
                Some(d) => println!(
                    "different: online {d}, rebuilt {} at seq {}",
                    r.rebuilt_digest, r.compared_at
                ),
                None => println!(
                    "no online model to compare; rebuilt sha256 {}",
                    r.rebuilt_digest
                ),
            }
            Ok(())
        }
    }
}
