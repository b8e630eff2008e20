//! The `keel facts` verbs: set one version of a fact, list the versions in force at a time,
//! show a key's history, import many from YAML or CSV. Each version is a `FactSet` event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::open_store;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keel_core::clock::format_ms;
use keel_core::Clock;
use keel_policy::{Fact, FactScope};
use keel_service::facts::{load as load_facts, set as set_facts};

use crate::{cli_operator, load, ConfigArg};

/// The arguments of `keel facts set`.
#[derive(Args)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    pub(crate) key: String,
    /// A number (percent, years, currency, count), YYYY-MM-DD (date), text, true/false.
    #[arg(long)]
    pub(crate) value: String,
    /// percent | years | currency | count | date | string | boolean
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// JPY | USD | EUR (currency facts)
    #[arg(long)]
    pub(crate) currency: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (default: now).
    #[arg(long)]
    pub(crate) from: Option<String>,
    #[arg(long)]
    pub(crate) until: Option<String>,
    #[arg(long = "tenant")]
    pub(crate) tenants: Vec<String>,
    #[arg(long = "locale")]
    pub(crate) locales: Vec<String>,
    #[arg(long = "jurisdiction")]
    pub(crate) jurisdictions: Vec<String>,
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// English subject terms (repeat the flag for several).
    #[arg(long = "subject-en")]
    pub(crate) subject_en: Vec<String>,
    /// Japanese subject terms.
    #[arg(long = "subject-ja")]
    pub(crate) subject_ja: Vec<String>,
    #[arg(long)]
    pub(crate) source: Option<String>,
    #[arg(long)]
    pub(crate) owner: Option<String>,
    #[arg(long)]
    pub(crate) reason: String,
}

#[derive(Subcommand)]
pub(crate) enum FactsVerb {
    /// Set a version of a fact (prints its event's sequence number). Fields not given are taken
    /// from the key's latest version (kind, currency, subjects, source, owner, scope).
    Set(Box<SetArgs>),
    /// The versions in force at a time (default now), one per key and scope, as a table.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// RFC 3339 or YYYY-MM-DD.
        #[arg(long)]
        at: Option<String>,
    },
    /// Every version of a key, oldest first, with who set it and why.
    History {
        #[command(flatten)]
        config: ConfigArg,
        key: String,
    },
    /// Set many versions from a YAML (list or `facts:`) or CSV file; all or nothing.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        file: PathBuf,
        #[arg(long)]
        reason: String,
    },
}

fn scope_text(s: &FactScope) -> String {
    let mut parts = Vec::new();
    if !s.tenants.is_empty() {
        parts.push(format!("tenants={}", s.tenants.join("|")));
    }
    if !s.jurisdictions.is_empty() {
        parts.push(format!("jurisdictions={}", s.jurisdictions.join("|")));
    }
    if !s.locales.is_empty() {
        parts.push(format!("locales={}", s.locales.join("|")));
    }
    if let Some(t) = &s.topic {
        parts.push(format!("topic={t}"));
    }
    if parts.is_empty() {
        "*".into()
    } else {
        parts.join(",")
    }
}

fn value_text(f: &Fact) -> String {
    f.typed_value()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| f.value.to_string())
}

pub async fn run(verb: FactsVerb, clock: Arc<dyn Clock>) -> Result<()> {
    match verb {
        FactsVerb::Set(args) => {
            let SetArgs {
                config,
                key,
                value,
                kind,
                currency,
                from,
                until,
                tenants,
                locales,
                jurisdictions,
                topic,
                subject_en,
                subject_ja,
                source,
                owner,
                reason,
            } = *args;
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = async {
                let history = load_facts(store.as_ref(), Some(&key)).await?;
                let latest = history.last().map(|(_, f)| f.clone());
                let scope_given = !(tenants.is_empty()
                    && locales.is_empty()
                    && jurisdictions.is_empty()
                    && topic.is_none());
                let Some(kind) = kind.or_else(|| latest.as_ref().map(|f| f.kind.clone())) else {
                    bail!("`{key}` is a new fact: give --kind");
                };
                let mut subjects = BTreeMap::new();
                if !subject_en.is_empty() {
                    subjects.insert("en".to_string(), subject_en);
                }
                if !subject_ja.is_empty() {
                    subjects.insert("ja".to_string(), subject_ja);
                }
                if subjects.is_empty() {
                    subjects = latest
                        .as_ref()
                        .map(|f| f.subjects.clone())
                        .unwrap_or_default();
                }
                let fact = Fact {
                    key: key.clone(),
                    value: keel_loop::facts::value_from_text(&kind, &value),
                    currency: currency.or_else(|| latest.as_ref().and_then(|f| f.currency.clone())),
                    kind,
                    scope: if scope_given {
                        FactScope {
                            tenants,
                            locales,
                            jurisdictions,
                            topic,
                            ..FactScope::default()
                        }
                    } else {
                        latest.as_ref().map(|f| f.scope.clone()).unwrap_or_default()
                    },
                    effective_from: from.unwrap_or_else(|| clock.now().to_rfc3339()),
                    effective_until: until,
                    source: source
                        .or_else(|| latest.as_ref().map(|f| f.source.clone()))
                        .unwrap_or_default(),
                    owner: owner
                        .or_else(|| latest.as_ref().map(|f| f.owner.clone()))
                        .unwrap_or_default(),
                    subjects,
                };
                let stored = set_facts(
                    store.as_ref(),
                    &cli_operator(),
                    &[fact],
                    &reason,
                    clock.now_ms(),
                )
                .await?;
                Ok(stored)
            }
            .await;
            store.close().await;
            for e in result? {
                let Ok(f) = serde_json::from_value::<Fact>(e.payload["fact"].clone()) else {
                    println!("{}", e.seq);
                    continue;
                };
                println!(
                    "set {} = {} scope {} from {}{} (event {})",
                    f.key,
                    value_text(&f),
                    scope_text(&f.scope),
                    f.effective_from,
                    f.effective_until
                        .as_deref()
                        .map(|u| format!(" until {u}"))
                        .unwrap_or_default(),
                    e.seq
                );
            }
        }
        FactsVerb::List { config, at } => {
            let at = match at.as_deref() {
                Some(s) => keel_policy::facts::parse_instant(s).map_err(anyhow::Error::msg)?,
                None => clock.now(),
            };
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let rows = load_facts(store.as_ref(), None).await;
            store.close().await;
            let facts: Vec<Fact> = rows?.into_iter().map(|(_, f)| f).collect();
            eprintln!("facts in force at {}", at.to_rfc3339());
            println!("KEY\tVALUE\tSCOPE\tFROM\tUNTIL\tSOURCE");
            for (f, end) in keel_policy::in_force_at(&facts, at) {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    f.key,
                    value_text(&f),
                    scope_text(&f.scope),
                    f.effective_from,
                    end.map(|e| e.to_rfc3339()).unwrap_or_else(|| "-".into()),
                    f.source
                );
            }
        }
        FactsVerb::History { config, key } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let rows = load_facts(store.as_ref(), Some(&key)).await;
            store.close().await;
            let rows = rows?;
            if rows.is_empty() {
                bail!("no fact `{key}` (see `keel facts list`)");
            }
            println!("SEQ\tSET_AT\tACTOR\tVALUE\tSCOPE\tFROM\tUNTIL\tREASON");
            for (r, f) in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.seq,
                    format_ms(r.at_ms),
                    r.actor,
                    value_text(&f),
                    scope_text(&f.scope),
                    f.effective_from,
                    f.effective_until.as_deref().unwrap_or("-"),
                    r.reason
                );
            }
        }
        FactsVerb::Import {
            config,
            file,
            reason,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let facts = keel_loop::facts::parse_import(&file.display().to_string(), &text)?;
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = set_facts(
                store.as_ref(),
                &cli_operator(),
                &facts,
                &reason,
                clock.now_ms(),
            )
            .await;
            store.close().await;
            let stored = result?;
            eprintln!("{} fact versions imported", stored.len());
            for e in stored {
                println!("{}", e.seq);
            }
        }
    }
    Ok(())
}
