//! The `keel policy` verbs: lint, test and diff bundles (no config); publish, activate and list
//! versions (config). Rollouts, backtests, history and proposals are in `update`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::open_store;
use anyhow::{bail, Context, Result};
use keel_core::clock::format_ms;
use keel_core::Clock;
use keel_loop::update::published_event;
use keel_policy::{floor, lint, run_tests, Bundle, Policy};

use crate::{cli_actor, load, PolicyVerb};

pub(crate) fn load_policy(dir: &PathBuf) -> Result<(Bundle, Policy)> {
    let bundle = Bundle::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    let policy = Policy::compile(&bundle).map_err(|e| {
        let issues: Vec<String> = e
            .issues()
            .iter()
            .map(|i| format!("{}/{i}", dir.display()))
            .collect();
        if issues.is_empty() {
            anyhow::anyhow!("{}: {e}", dir.display())
        } else {
            anyhow::anyhow!("{}", issues.join("\n"))
        }
    })?;
    Ok((bundle, policy))
}

pub async fn run(verb: PolicyVerb, clock: Arc<dyn Clock>) -> Result<()> {
    match verb {
        PolicyVerb::Lint { dirs } => {
            let mut errors = 0;
            for dir in &dirs {
                let bundle =
                    Bundle::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
                let mut issues = lint(&bundle);
                if let Ok(p) = Policy::compile(&bundle) {
                    issues.extend(floor::lint_issues(&floor::gaps_from_default(&p)?));
                }
                for i in &issues {
                    println!("{}/{i}", dir.display());
                }
                let errs = issues.iter().filter(|i| i.is_error()).count();
                errors += errs;
                if errs == 0 {
                    println!(
                        "{}: ok (version {}, {} warning{})",
                        dir.display(),
                        bundle.version_id(),
                        issues.len(),
                        if issues.len() == 1 { "" } else { "s" }
                    );
                }
            }
            if errors > 0 {
                bail!("{errors} lint errors");
            }
        }
        PolicyVerb::Test { dirs } => {
            let mut failed = 0;
            for dir in &dirs {
                let (_, policy) = load_policy(dir)?;
                let report = run_tests(&policy);
                println!("{}: {report}", dir.display());
                failed += report.cases.len() - report.passed();
            }
            if failed > 0 {
                bail!("{failed} policy test cases failed");
            }
        }
        PolicyVerb::Diff { from, to, config } => {
            let a = crate::versions::dir_or_version(&from, config.as_deref()).await?;
            let b = crate::versions::dir_or_version(&to, config.as_deref()).await?;
            println!("{}", keel_policy::diff(&a, &b));
            // What each side lacks of the default pack's protections.
            for (side, p) in [("from", &a), ("to", &b)] {
                if let Some(s) = floor::summary(&floor::gaps_from_default(p)?) {
                    println!("{side} ({}) {s}", p.name());
                }
            }
        }
        PolicyVerb::Publish {
            config,
            dir,
            reason,
        } => {
            let (bundle, policy) = load_policy(&dir)?;
            let report = run_tests(&policy);
            if !report.ok() {
                bail!("the bundle's own tests fail; not publishing:\n{report}");
            }
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let exists = store
                .policy_versions()
                .await?
                .iter()
                .any(|v| v.version == policy.version());
            let result = if exists {
                eprintln!("version {} is already published", policy.version());
                Ok(())
            } else {
                match published_event(&bundle, &policy, &reason, &cli_actor(), clock.now_ms()) {
                    Ok(ev) => store
                        .append(vec![ev])
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                }
            };
            store.close().await;
            result?;
            println!("{}", policy.version());
        }
        PolicyVerb::Activate {
            config,
            version,
            tenant,
            reason,
            allow_weaker_than_default,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = async {
                let reason = match reason {
                    Some(r) => r,
                    None if allow_weaker_than_default => String::new(),
                    None => "activated from the CLI".to_string(),
                };
                // Activation is a rollout at 100 % (one state machine); the service resolves
                // the version and applies the protection floor.
                let activation = keel_service::rollouts::Activation {
                    version: &version,
                    tenant,
                    reason: &reason,
                    allow_weaker_than_default,
                    id: keel_core::id::new_id("ro", clock.as_ref()),
                };
                let done = keel_service::rollouts::activate(
                    store.as_ref(),
                    clock.as_ref(),
                    &crate::cli_operator(),
                    activation,
                )
                .await?;
                for w in &done.warnings {
                    eprintln!("warning: {w}");
                }
                let version = done.rollout.version;
                Ok::<_, anyhow::Error>(version)
            }
            .await;
            store.close().await;
            println!("{}", result?);
        }
        other @ (PolicyVerb::Rollout { .. }
        | PolicyVerb::Promote { .. }
        | PolicyVerb::Rollback { .. }
        | PolicyVerb::Rollouts { .. }
        | PolicyVerb::Backtest { .. }
        | PolicyVerb::History { .. }
        | PolicyVerb::Propose { .. }
        | PolicyVerb::Proposals { .. }
        | PolicyVerb::Approve { .. }
        | PolicyVerb::Reject { .. }) => crate::update::run(other, clock).await?,
        PolicyVerb::List { config } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let versions = store.policy_versions().await;
            let active = store.policy_activations().await;
            store.close().await;
            let (versions, active) = (versions?, active?);
            println!("VERSION\tNAME\tOWNER\tPUBLISHED\tBY\tACTIVE_FOR\tREASON");
            // The embedded default pack serves every scope without an activation.
            if !active
                .iter()
                .any(|a| a.scope == keel_loop::update::GLOBAL_SCOPE)
            {
                let default = Policy::default_pack()?;
                println!(
                    "{}\t{}\t{}\t-\t-\t*\tembedded default pack (active until you activate a version for every tenant)",
                    default.version(),
                    default.name(),
                    default.owner()
                );
            }
            for v in versions {
                let scopes: Vec<&str> = active
                    .iter()
                    .filter(|a| a.version == v.version)
                    .map(|a| a.scope.as_str())
                    .collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    v.version,
                    v.name,
                    v.owner,
                    format_ms(v.published_ms),
                    v.actor,
                    if scopes.is_empty() {
                        "-".to_string()
                    } else {
                        scopes.join(",")
                    },
                    v.reason
                );
            }
        }
    }
    Ok(())
}
