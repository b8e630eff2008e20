//! Naming and showing policy versions on the command line: a bundle directory, or a published
//! version by full id or unambiguous prefix (the one resolver,
//! `keel_service::rollouts::resolve_version`); the `policy rollouts` table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use keel_policy::Policy;

/// The policy in directory `arg`, else the published version `arg` names (needs `config`).
pub(crate) async fn dir_or_version(arg: &Path, config: Option<&Path>) -> Result<Policy> {
    if arg.is_dir() {
        return Ok(crate::policy::load_policy(&PathBuf::from(arg))?.1);
    }
    let Some(config) = config else {
        bail!(
            "{}: not a bundle directory (to name a published version, pass --config)",
            arg.display()
        );
    };
    let config = keel_gateway::Config::load(config)?;
    let store = crate::open_store(&config).await?;
    let result = async {
        let query = arg.to_string_lossy();
        let version = keel_service::rollouts::resolve_version(store.as_ref(), &query).await?;
        let payload = store
            .policy_bundle(&version)
            .await?
            .with_context(|| format!("version {version} has no stored bundle"))?;
        let bundle = keel_loop::update::bundle_from_payload(&payload)?;
        Ok::<_, anyhow::Error>(Policy::compile(&bundle)?)
    }
    .await;
    store.close().await;
    result
}

/// A rollout that is no longer live (superseded, rolled back, promoted) keeps no guard verdict:
/// the one it had was about a canary that is over.
pub(crate) fn without_stale_verdict(mut row: serde_json::Value) -> serde_json::Value {
    let live = matches!(row["state"].as_str(), Some("canary"));
    if !live {
        if let Some(o) = row.as_object_mut() {
            for k in ["verdict", "verdict_reason", "guards", "arms"] {
                o.remove(k);
            }
        }
    }
    row
}

/// `policy rollouts` as a table: one line per rollout, newest first.
pub(crate) fn rollouts_table(rows: &[serde_json::Value]) -> String {
    let mut out = String::from("ID\tSTATE\tVERSION\tBASELINE\tPERCENT\tSCOPE\tUPDATED\tVERDICT\n");
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let short = |k: &str| keel_policy::version::short(r[k].as_str().unwrap_or("-")).to_string();
        let scope = match (r["scope"]["tenant"].as_str(), r["scope"]["locale"].as_str()) {
            (None, None) => "*".to_string(),
            (t, l) => [t, l].into_iter().flatten().collect::<Vec<_>>().join("/"),
        };
        let verdict = match (r["verdict"].as_str(), r["verdict_reason"].as_str()) {
            (Some(v), Some(why)) => format!("{v}: {why}"),
            (Some(v), None) => v.to_string(),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            s("id"),
            s("state"),
            short("version"),
            short("baseline"),
            r["percent"],
            scope,
            r["updated_ms"]
                .as_i64()
                .map(keel_core::clock::format_ms)
                .unwrap_or_else(|| "-".into()),
            verdict
        ));
    }
    out
}
