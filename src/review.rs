//! The human-in-the-loop verbs: `keel review list|show|claim|label` (a reviewer at a terminal),
//! `keel kpis` (a table) and `keel export sft|dpo` (training datasets from corrections).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::open_store;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keel_core::clock::format_ms;
use keel_core::{Clock, NewEvent};
use keel_loop::review::dataset::{dpo_line, sft_line, Correction, ExportFilter};
use keel_loop::review::kpi::{self, KpiQuery, KpiRow};
use keel_loop::review::{kinds, Label};
use keel_policy::{EvalContext, EvalInput, Phase, Policy};
use keel_service::kpis::{self, Comparison};
use keel_service::reviews::{self, claim_state, ListRequest};
use keel_service::{backtests, keys, proposals};
use keel_store::Store;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{cli_actor, cli_operator, load, ConfigArg};

#[derive(Subcommand)]
pub(crate) enum ReviewVerb {
    /// The queue by priority (severity, then age), tab-separated.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        tenant: Option<String>,
        /// open | claimed | done
        #[arg(long)]
        status: Option<String>,
        /// escalation | alert | user_report | audit_sample | judge
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One item with its interaction and labels (JSON).
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    /// Claim an item with your reviewer key (a lease of `[review] lease_ms`).
    Claim {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        /// Your reviewer API key (its --name is recorded as the reviewer).
        #[arg(long, env = "KEEL_KEY", hide_env_values = true)]
        key: String,
    },
    /// Label an item you hold.
    Label {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        #[arg(long, env = "KEEL_KEY", hide_env_values = true)]
        key: String,
        /// ok | violation | wrong_answer | outdated
        #[arg(long)]
        verdict: String,
        /// For a violation: its category (e.g. S7, custom:refunds).
        #[arg(long)]
        category: Option<String>,
        /// The response that should have been given.
        #[arg(long)]
        corrected: Option<String>,
        #[arg(long)]
        notes: Option<String>,
        /// A structured suggestion as JSON: {"kind": "rewrite|lexicon_term|fact_update|escalate", …}
        #[arg(long)]
        suggestion: Option<String>,
    },
}

#[derive(Args)]
pub(crate) struct KpisArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// RFC 3339, YYYY-MM-DD, Unix ms or a span back (7d).
    #[arg(long, default_value = "7d")]
    from: String,
    /// Exclusive; default now.
    #[arg(long)]
    to: Option<String>,
    /// none | hour | day | week | <n>m|h|d
    #[arg(long, default_value = "none")]
    bucket: String,
    /// Comma list of tenant, locale, jurisdiction, policy_version, topic.
    #[arg(long)]
    group_by: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// Compare two policy versions over the period: A,B.
    #[arg(long)]
    compare_policies: Option<String>,
    /// Compare with a second period (with --compare-to).
    #[arg(long, requires = "compare_to")]
    compare_from: Option<String>,
    #[arg(long, requires = "compare_from")]
    compare_to: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum ExportVerb {
    /// OpenAI chat fine-tuning JSONL: the prompt, then the corrected assistant turn.
    Sft(ExportArgs),
    /// TRL preference JSONL: prompt, chosen = the correction, rejected = what was served.
    Dpo(ExportArgs),
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    out: PathBuf,
    /// Reviews at or after (RFC 3339, YYYY-MM-DD, Unix ms or a span back like 30d).
    #[arg(long)]
    from: Option<String>,
    /// Reviews before.
    #[arg(long)]
    to: Option<String>,
    /// A violation category (S7, custom:…) or a verdict (wrong_answer, outdated).
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    locale: Option<String>,
    #[arg(long)]
    jurisdiction: Option<String>,
}

fn time(s: &str, now: i64) -> Result<i64> {
    kpi::parse_time(s, now)
        .with_context(|| format!("`{s}`: expected RFC 3339, YYYY-MM-DD, Unix ms or a span like 7d"))
}

pub async fn review(verb: ReviewVerb, clock: Arc<dyn Clock>) -> Result<()> {
    match verb {
        ReviewVerb::List {
            config,
            tenant,
            status,
            source,
            limit,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let now = clock.now_ms();
            let req = ListRequest {
                tenant,
                status,
                source,
                after_id: None,
                limit,
            };
            let rows = reviews::list(store.as_ref(), &cli_operator(), req, now).await;
            store.close().await;
            println!("ID\tSEVERITY\tSOURCE\tSTATUS\tAGE_S\tCLAIMED_BY\tINTERACTION\tREASON");
            for r in rows? {
                let status = claim_state(&r).effective_status(now);
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.severity,
                    r.source,
                    status,
                    (now - r.created_ms).max(0) / 1000,
                    if status == "claimed" {
                        r.claimed_by.as_deref().unwrap_or("-")
                    } else {
                        "-"
                    },
                    r.interaction_id,
                    r.reason.as_deref().unwrap_or("-")
                );
            }
        }
        ReviewVerb::Show { config, id } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let out = show(store.as_ref(), &id, clock.as_ref()).await;
            store.close().await;
            println!("{}", serde_json::to_string_pretty(&out?)?);
        }
        ReviewVerb::Claim { config, id, key } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let lease_ms = config.review.lease_ms;
            let r = claim(store.as_ref(), clock.as_ref(), &id, &key, lease_ms).await;
            store.close().await;
            println!("{}", r?);
        }
        ReviewVerb::Label {
            config,
            id,
            key,
            verdict,
            category,
            corrected,
            notes,
            suggestion,
        } => {
            let suggestion: Option<Value> = suggestion
                .map(|s| serde_json::from_str(&s).context("--suggestion is not JSON"))
                .transpose()?;
            let body = json!({"verdict": verdict, "category": category, "corrected_response": corrected,
                              "notes": notes, "suggestion": suggestion});
            let label = Label::parse(&body)?;
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let quorum = config.review.reviewers_per_item;
            let r = label_item(store.as_ref(), clock.as_ref(), &id, &key, &label, quorum).await;
            store.close().await;
            println!("{}", r?);
        }
    }
    Ok(())
}

/// The reviewer's view of one item: the reports (comment, correct answer, CSAT), the
/// conversation, the decision with spans and facts, the labels so far.
async fn show(store: &dyn Store, id: &str, clock: &dyn Clock) -> Result<Value> {
    let d = reviews::detail(store, &cli_operator(), id, clock.now_ms()).await?;
    let mut out = d.view;
    out["item"] = serde_json::to_value(&d.item)?;
    Ok(out)
}

/// Claims an item as the reviewer behind `token`.
async fn claim(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    token: &str,
    lease_ms: i64,
) -> Result<String> {
    let actor = keys::actor_for_token(store, token).await?;
    let item = reviews::claim(store, clock, &actor, id, lease_ms).await?;
    let until = item.lease_until_ms.unwrap_or(clock.now_ms() + lease_ms);
    Ok(format!("{id}\tclaimed until {}", format_ms(until)))
}

/// Labels an item as the reviewer behind `token`.
async fn label_item(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    token: &str,
    label: &Label,
    quorum: u32,
) -> Result<String> {
    let actor = keys::actor_for_token(store, token).await?;
    reviews::label(store, clock, &actor, id, label, quorum).await?;
    Ok(format!("{id}\t{}", label.verdict))
}

pub async fn kpis(args: KpisArgs, clock: Arc<dyn Clock>) -> Result<()> {
    let now = clock.now_ms();
    let to = match &args.to {
        Some(t) => time(t, now)?,
        None => now,
    };
    let from = time(&args.from, now)?;
    if from >= to {
        bail!("--from must be before --to");
    }
    let bucket_ms =
        kpi::parse_bucket(&args.bucket).context("--bucket: none, hour, day, week or <n>m|h|d")?;
    let group_by = kpis::parse_group_by(args.group_by.as_deref()).context(
        "--group-by: a comma list of tenant, locale, jurisdiction, policy_version, topic",
    )?;
    let config = load(&args.config)?;
    let store = open_store(&config).await?;
    let q = KpiQuery {
        from_ms: from,
        to_ms: to,
        bucket_ms,
        group_by,
        now_ms: now,
    };
    let result = kpis_inner(store.as_ref(), &args, &q).await;
    let learned = keel_service::learn::status(store.as_ref(), &config.learn).await;
    store.close().await;
    let (rows, comparison) = result?;
    let learned = learned?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"data": rows, "comparison": comparison, "learned": learned})
            )?
        );
        return Ok(());
    }
    print!("{}", kpi::table(&rows, &|ms| format_ms(ms)));
    println!();
    println!("LEARNED MONITOR (prequential, most recent reviews)");
    print!("{}", crate::learn::table(&learned));
    if let Some(c) = comparison {
        println!();
        println!("COMPARISON (a − b)\tA\tB\tDIFF\tCI95");
        let fmt = |v: &Value| match v.as_f64() {
            Some(x) => format!("{x:.4}"),
            None => "-".into(),
        };
        for (name, v) in [
            ("csat_mean", &c["csat_mean"]),
            ("wrong_answer_reports", &c["wrong_answer_reports"]),
            ("wrong_answer_reviews", &c["wrong_answer_reviews"]),
            ("escalations", &c["escalations"]),
        ] {
            println!(
                "{name}\t{}\t{}\t{}\t[{}, {}]",
                fmt(&v["a"]),
                fmt(&v["b"]),
                fmt(&v["diff"]),
                fmt(&v["ci95"][0]),
                fmt(&v["ci95"][1])
            );
        }
        let by_category = ["violations", "interventions"].into_iter().flat_map(|k| {
            c[k].as_object()
                .into_iter()
                .flatten()
                .map(move |(cat, v)| (k, cat, v))
        });
        for (kind, cat, v) in by_category {
            println!(
                "{kind}:{cat}\t{}\t{}\t{}\t[{}, {}]",
                fmt(&v["a"]),
                fmt(&v["b"]),
                fmt(&v["diff"]),
                fmt(&v["ci95"][0]),
                fmt(&v["ci95"][1])
            );
        }
    }
    Ok(())
}

async fn kpis_inner(
    store: &dyn Store,
    args: &KpisArgs,
    q: &KpiQuery,
) -> Result<(Vec<KpiRow>, Option<Value>)> {
    let compare = if let (Some(cf), Some(ct)) = (&args.compare_from, &args.compare_to) {
        Some(Comparison::Period {
            from_ms: time(cf, q.now_ms)?,
            to_ms: time(ct, q.now_ms)?,
        })
    } else if let Some(pair) = &args.compare_policies {
        let (va, vb) = pair
            .split_once(',')
            .context("--compare-policies: expected A,B")?;
        Some(Comparison::Policies {
            a: va.trim().to_string(),
            b: vb.trim().to_string(),
        })
    } else {
        None
    };
    let tenant = args.tenant.as_deref();
    let r = kpis::report(store, &cli_operator(), tenant, q, compare.as_ref()).await?;
    Ok((r.rows, r.comparison))
}

/// PII redaction for exports: the active policy's output rules (redact/rewrite), then a
/// baseline pass with every PII recognizer, so an active policy without a redact rule never
/// lets personal data into a dataset.
struct Redactor {
    /// The policy in force per tenant (its activation, else the global one, else the default
    /// pack), compiled with the facts registry as the gateway serves it.
    policies: std::collections::BTreeMap<String, Policy>,
    baseline: Policy,
    now: chrono::DateTime<chrono::Utc>,
}

const BASELINE: &str = "name: export-redaction
owner: keel
detectors:
  - id: pii
    kind: pii
rules:
  - id: pii-out
    category: S7
    phase: output
    when: signals.pii.count > 0
    action:
      redact: {detectors: [pii], replacement: \"[{LABEL}]\"}
";

impl Redactor {
    fn pass(
        policy: &Policy,
        tenant: &str,
        now: chrono::DateTime<chrono::Utc>,
        text: &str,
    ) -> Option<String> {
        let input = EvalInput::new(EvalContext::new(tenant, now)).reply(text);
        let d = policy.evaluate(Phase::Output, &input);
        d.text_for(0).map(str::to_string)
    }

    fn redact(&self, tenant: &str, text: &str) -> String {
        let first = match self.policies.get(tenant) {
            Some(policy) => Self::pass(policy, tenant, self.now, text),
            None => None,
        }
        .unwrap_or_else(|| text.to_string());
        Self::pass(&self.baseline, tenant, self.now, &first).unwrap_or(first)
    }
}

pub async fn export(verb: ExportVerb, clock: Arc<dyn Clock>) -> Result<()> {
    let (format, args) = match verb {
        ExportVerb::Sft(args) => ("sft", args),
        ExportVerb::Dpo(args) => ("dpo", args),
    };
    let now = clock.now_ms();
    let filter = ExportFilter {
        from_ms: args.from.as_deref().map(|s| time(s, now)).transpose()?,
        to_ms: args.to.as_deref().map(|s| time(s, now)).transpose()?,
        category: args.category.clone(),
        tenant: args.tenant.clone(),
        locale: args.locale.clone(),
        jurisdiction: args.jurisdiction.clone(),
    };
    let config = load(&args.config)?;
    let store = open_store(&config).await?;
    let result = export_inner(store.as_ref(), format, &args, &filter, clock.as_ref()).await;
    store.close().await;
    let (sha, lines) = result?;
    eprintln!("wrote {lines} {format} lines to {}", args.out.display());
    println!("{sha}  {}", args.out.display());
    Ok(())
}

async fn export_inner(
    store: &dyn Store,
    format: &str,
    args: &ExportArgs,
    filter: &ExportFilter,
    clock: &dyn Clock,
) -> Result<(String, usize)> {
    let events = store
        .events_in_range(
            &[kinds::COMPLETED],
            filter.tenant.as_deref(),
            filter.from_ms.unwrap_or(0),
            filter.to_ms.unwrap_or(i64::MAX),
        )
        .await?;
    let mut policies = std::collections::BTreeMap::new();
    for ev in &events {
        if !policies.contains_key(&ev.tenant) {
            let (_, bundle) = proposals::base_bundle(store, Some(&ev.tenant)).await?;
            let policy = backtests::compile_candidate(store, &bundle, None).await?;
            policies.insert(ev.tenant.clone(), policy);
        }
    }
    let redactor = Redactor {
        policies,
        baseline: Policy::from_files(&[("policy.yaml", BASELINE)])?,
        now: clock.now(),
    };
    let mut out = Vec::new();
    let mut lines = 0usize;
    for ev in &events {
        let p = &ev.payload;
        if !filter.matches(&ev.tenant, ev.at_ms, p) {
            continue;
        }
        let Some(corrected) = p["corrected_response"]
            .as_str()
            .filter(|s| !s.trim().is_empty())
        else {
            continue;
        };
        let Some(iid) = p["interaction_id"].as_str() else {
            continue;
        };
        let Some(ix) = store.interaction(iid).await? else {
            continue;
        };
        if !ix.record.is_object() {
            continue; // erased
        }
        let served = ix.record["response_text"][0].as_str().unwrap_or_default();
        let c = Correction {
            request_messages: &ix.record["request_messages"],
            served,
            corrected,
        };
        let redact = |t: &str| redactor.redact(&ev.tenant, t);
        let line = match format {
            "sft" => sft_line(&c, &redact),
            _ => dpo_line(&c, &redact),
        };
        if let Some(line) = line {
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
            lines += 1;
        }
    }
    let sha = hex::encode(Sha256::digest(&out));
    let mut f = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    f.write_all(&out)?;
    f.sync_all()?;
    store
        .append(vec![NewEvent {
            kind: kinds::EXPORTED.to_string(),
            actor: cli_actor(),
            tenant: filter
                .tenant
                .clone()
                .unwrap_or_else(|| keel_core::auth::ALL_TENANTS.to_string()),
            at_ms: clock.now_ms(),
            payload: json!({
                "format": format,
                "file": args.out.display().to_string(),
                "sha256": sha,
                "lines": lines,
                "filters": {"from_ms": filter.from_ms, "to_ms": filter.to_ms, "category": filter.category,
                            "tenant": filter.tenant, "locale": filter.locale, "jurisdiction": filter.jurisdiction},
            }),
        }])
        .await?;
    Ok((sha, lines))
}
