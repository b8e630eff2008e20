//! The human-in-the-loop verbs: `keel review list|show|claim|label` (a reviewer at a terminal),
//! `keel kpis` (a table) and `keel export sft|dpo` (training datasets from corrections).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keel_core::clock::format_ms;
use keel_core::{Clock, NewEvent, Role};
use keel_gateway::api::kpis::{load as load_kpis, parse_group_by};
use keel_gateway::policy::PolicyRuntime;
use keel_gateway::server::open_store;
use keel_loop::review::dataset::{dpo_line, sft_line, Correction, ExportFilter};
use keel_loop::review::kpi::{self, Dim, KpiQuery, KpiRow};
use keel_loop::review::{claim_event, kinds, label_event, ClaimState, ItemRef, Label};
use keel_policy::{EvalContext, EvalInput, Phase, Policy};
use keel_store::{ReviewItemRow, ReviewQuery, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{cli_actor, load, ConfigArg};

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
        /// escalation | alert | user_report | audit_sample
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
            let rows = store
                .review_items(&ReviewQuery {
                    tenant,
                    status,
                    source,
                    now_ms: now,
                    limit,
                    ..ReviewQuery::default()
                })
                .await;
            store.close().await;
            println!("ID\tSEVERITY\tSOURCE\tSTATUS\tAGE_S\tCLAIMED_BY\tINTERACTION\tREASON");
            for r in rows? {
                let st = state_of(&r);
                let status = st.effective_status(now);
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
            let r = claim(store.as_ref(), &config, &id, &key, clock.as_ref()).await;
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
            let r = label_item(store.as_ref(), &config, &id, &key, &label, clock.as_ref()).await;
            store.close().await;
            println!("{}", r?);
        }
    }
    Ok(())
}

fn state_of(r: &ReviewItemRow) -> ClaimState<'_> {
    ClaimState {
        status: &r.status,
        claimed_by: r.claimed_by.as_deref(),
        lease_until_ms: r.lease_until_ms,
    }
}

fn item_ref(r: &ReviewItemRow) -> ItemRef<'_> {
    ItemRef {
        id: &r.id,
        interaction_id: &r.interaction_id,
        tenant: &r.tenant,
        source: &r.source,
    }
}

async fn show(store: &dyn Store, id: &str, clock: &dyn Clock) -> Result<Value> {
    let Some(item) = store.review_item(id).await? else {
        bail!("no review item `{id}`");
    };
    let now = clock.now_ms();
    let mut out = keel_gateway::review_view::detail(store, &item, now).await?;
    out["item"] = serde_json::to_value(&item)?;
    Ok(out)
}

/// The reviewer behind `token`, able to see `tenant`.
async fn reviewer(store: &dyn Store, token: &str, tenant: &str) -> Result<keel_core::ApiKeyRecord> {
    let key = store
        .key_by_hash(&keel_core::auth::hash_token(token.trim()))
        .await?
        .filter(|k| k.revoked_ms.is_none())
        .context("unknown or revoked key")?;
    if key.role != Role::Reviewer {
        bail!(
            "this key has role {}; reviewing needs a reviewer key",
            key.role.as_str()
        );
    }
    if !key.sees_tenant(tenant) {
        bail!("no such review item for this key");
    }
    Ok(key)
}

async fn claim(
    store: &dyn Store,
    config: &keel_gateway::Config,
    id: &str,
    token: &str,
    clock: &dyn Clock,
) -> Result<String> {
    let item = store
        .review_item(id)
        .await?
        .context("no such review item")?;
    let key = reviewer(store, token, &item.tenant).await?;
    let now = clock.now_ms();
    if !state_of(&item).claimable_by(&key.actor(), now) {
        bail!("review item `{id}` is held by someone else, done, or labelled by you already");
    }
    let name = key.name.clone().unwrap_or_else(|| key.key_id.clone());
    let ev = claim_event(
        item_ref(&item),
        &key.actor(),
        &name,
        now,
        config.review.lease_ms,
    );
    store
        .append(vec![ev])
        .await
        .context("the claim was refused (someone else claimed it meanwhile?)")?;
    Ok(format!(
        "{id}\tclaimed until {}",
        format_ms(now + config.review.lease_ms)
    ))
}

async fn label_item(
    store: &dyn Store,
    config: &keel_gateway::Config,
    id: &str,
    token: &str,
    label: &Label,
    clock: &dyn Clock,
) -> Result<String> {
    let item = store
        .review_item(id)
        .await?
        .context("no such review item")?;
    let key = reviewer(store, token, &item.tenant).await?;
    let now = clock.now_ms();
    if !state_of(&item).held_by(&key.actor(), now) {
        bail!("claim review item `{id}` first (or your claim expired)");
    }
    let record = store
        .interaction(&item.interaction_id)
        .await?
        .map(|r| r.record)
        .unwrap_or(Value::Null);
    let name = key.name.clone().unwrap_or_else(|| key.key_id.clone());
    let ev = label_event(
        item_ref(&item),
        &key.actor(),
        &name,
        label,
        config.review.reviewers_per_item,
        &record,
        now,
    );
    store
        .append(vec![ev])
        .await
        .context("the label was refused (your claim expired?)")?;
    Ok(format!("{id}\t{}", label.verdict))
}

pub async fn kpis(a: KpisArgs, clock: Arc<dyn Clock>) -> Result<()> {
    let now = clock.now_ms();
    let to = match &a.to {
        Some(t) => time(t, now)?,
        None => now,
    };
    let from = time(&a.from, now)?;
    if from >= to {
        bail!("--from must be before --to");
    }
    let bucket_ms =
        kpi::parse_bucket(&a.bucket).context("--bucket: none, hour, day, week or <n>m|h|d")?;
    let group_by = parse_group_by(a.group_by.as_deref()).context(
        "--group-by: a comma list of tenant, locale, jurisdiction, policy_version, topic",
    )?;
    let config = load(&a.config)?;
    let store = open_store(&config).await?;
    let q = KpiQuery {
        from_ms: from,
        to_ms: to,
        bucket_ms,
        group_by,
        now_ms: now,
    };
    let result = kpis_inner(store.as_ref(), &a, &q).await;
    let learned = keel_gateway::learn::status(store.as_ref(), &config.learn).await;
    store.close().await;
    let (rows, comparison) = result?;
    let learned = learned?;
    if a.json {
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
    a: &KpisArgs,
    q: &KpiQuery,
) -> Result<(Vec<KpiRow>, Option<Value>)> {
    let tenant = a.tenant.as_deref();
    let rows = load_kpis(store, tenant, q).await?;
    let total = |from_ms, to_ms, group_by| KpiQuery {
        from_ms,
        to_ms,
        bucket_ms: None,
        group_by,
        now_ms: q.now_ms,
    };
    let empty = KpiRow::default();
    let comparison = if let (Some(cf), Some(ct)) = (&a.compare_from, &a.compare_to) {
        let (cf, ct) = (time(cf, q.now_ms)?, time(ct, q.now_ms)?);
        let ra = load_kpis(store, tenant, &total(q.from_ms, q.to_ms, vec![])).await?;
        let rb = load_kpis(store, tenant, &total(cf, ct, vec![])).await?;
        Some(kpi::compare(
            ra.first().unwrap_or(&empty),
            rb.first().unwrap_or(&empty),
        ))
    } else if let Some(pair) = &a.compare_policies {
        let (va, vb) = pair
            .split_once(',')
            .context("--compare-policies: expected A,B")?;
        let va = keel_gateway::update::resolve_recorded_version(store, va).await?;
        let vb = keel_gateway::update::resolve_recorded_version(store, vb).await?;
        let (va, vb) = (va.as_str(), vb.as_str());
        let all = load_kpis(
            store,
            tenant,
            &total(q.from_ms, q.to_ms, vec![Dim::PolicyVersion]),
        )
        .await?;
        let pick = |v: &str| {
            all.iter()
                .find(|r| r.group.get("policy_version").map(String::as_str) == Some(v.trim()))
                .unwrap_or(&empty)
        };
        Some(kpi::compare(pick(va), pick(vb)))
    } else {
        None
    };
    Ok((rows, comparison))
}

/// PII redaction for exports: the active policy's output rules (redact/rewrite), then a
/// baseline pass with every PII recognizer, so an active policy without a redact rule never
/// lets personal data into a dataset.
struct Redactor {
    runtime: PolicyRuntime,
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
        let policy = self.runtime.for_tenant(tenant);
        let first = Self::pass(&policy, tenant, self.now, text).unwrap_or_else(|| text.to_string());
        Self::pass(&self.baseline, tenant, self.now, &first).unwrap_or(first)
    }
}

pub async fn export(verb: ExportVerb, clock: Arc<dyn Clock>) -> Result<()> {
    let (format, a) = match verb {
        ExportVerb::Sft(a) => ("sft", a),
        ExportVerb::Dpo(a) => ("dpo", a),
    };
    let now = clock.now_ms();
    let filter = ExportFilter {
        from_ms: a.from.as_deref().map(|s| time(s, now)).transpose()?,
        to_ms: a.to.as_deref().map(|s| time(s, now)).transpose()?,
        category: a.category.clone(),
        tenant: a.tenant.clone(),
        locale: a.locale.clone(),
        jurisdiction: a.jurisdiction.clone(),
    };
    let config = load(&a.config)?;
    let store = open_store(&config).await?;
    let result = export_inner(store.as_ref(), format, &a, &filter, clock.as_ref()).await;
    store.close().await;
    let (sha, lines) = result?;
    eprintln!("wrote {lines} {format} lines to {}", a.out.display());
    println!("{sha}  {}", a.out.display());
    Ok(())
}

async fn export_inner(
    store: &dyn Store,
    format: &str,
    a: &ExportArgs,
    filter: &ExportFilter,
    clock: &dyn Clock,
) -> Result<(String, usize)> {
    let runtime = PolicyRuntime::new(Default::default())?;
    runtime.refresh(store).await?;
    let redactor = Redactor {
        runtime,
        baseline: Policy::from_files(&[("policy.yaml", BASELINE)])?,
        now: clock.now(),
    };
    let events = store
        .events_in_range(
            &[kinds::COMPLETED],
            filter.tenant.as_deref(),
            filter.from_ms.unwrap_or(0),
            filter.to_ms.unwrap_or(i64::MAX),
        )
        .await?;
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
    let mut f = std::fs::File::create(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
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
                "file": a.out.display().to_string(),
                "sha256": sha,
                "lines": lines,
                "filters": {"from_ms": filter.from_ms, "to_ms": filter.to_ms, "category": filter.category,
                            "tenant": filter.tenant, "locale": filter.locale, "jurisdiction": filter.jurisdiction},
            }),
        }])
        .await?;
    Ok((sha, lines))
}
