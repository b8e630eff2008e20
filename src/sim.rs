//! `keel simulate`, `keel sim-model` and `keel demo`: the stress-test simulator's verbs.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use keel_sim::runner::{simulate, Plan, RunResult, Strategy, Variant};
use keel_sim::{report, Scenario};

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// Scenario files, or bundled scenarios by name: leveraged-products, ja-term, recall, their
    /// `-realistic` copies, vat-rate, jp-majority, many-changes.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// static | monitor | continual (repeatable, or a comma list); default all three.
    #[arg(long)]
    strategy: Vec<String>,
    /// announced | unannounced (repeatable); default both.
    #[arg(long)]
    variant: Vec<String>,
    /// Where results.json, report.html and each run's database go.
    #[arg(long, default_value = "./keel-sim-out")]
    out: PathBuf,
    /// Overrides each scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run once per value: `KEY=V1,V2,…` (sample_rate, reviewers, delta, min_samples,
    /// min_change, canary_percent, reviewer_accuracy, reviewer_latency, rate).
    #[arg(long)]
    sweep: Option<String>,
    /// Multiply the arrival rate (e.g. 20 for a throughput run).
    #[arg(long)]
    scale: Option<f64>,
    /// Conversations in flight at once within a tick (results do not depend on it).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
}

#[derive(Args)]
pub(crate) struct SimModelArgs {
    /// A scenario file or a bundled scenario's name.
    scenario: String,
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    #[arg(long, default_value = "./keel-demo")]
    out: PathBuf,
    /// Keep the gateway (and its data) of the last run serving afterwards.
    #[arg(long)]
    serve: bool,
    /// Overrides each scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep each run's database under OUT/runs/ (removed otherwise, unless --serve).
    #[arg(long)]
    keep_runs: bool,
}

fn variants(v: &[String]) -> Result<Vec<Variant>> {
    if v.is_empty() {
        return Ok(Variant::ALL.to_vec());
    }
    v.iter()
        .flat_map(|x| x.split(','))
        .map(|x| match x.trim() {
            "announced" => Ok(Variant::Announced),
            "unannounced" => Ok(Variant::Unannounced),
            other => bail!("unknown variant `{other}` (announced, unannounced)"),
        })
        .collect()
}

fn strategies(v: &[String]) -> Result<Vec<Strategy>> {
    if v.is_empty() {
        return Ok(Strategy::ALL.to_vec());
    }
    let mut out = Vec::new();
    for x in v {
        out.extend(Strategy::parse_list(x)?);
    }
    Ok(out)
}

fn finish(plan: &Plan, results: &[RunResult], wall: std::time::Duration) -> Result<()> {
    report::write(&plan.out, results, "Keel stress test")?;
    print!("{}", report::table(results));
    let n: u64 = results.iter().map(|r| r.interactions).sum();
    eprintln!(
        "{} runs, {n} interactions in {:.1} s ({:.0} interactions/s); wrote {} and {}",
        results.len(),
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64().max(1e-9),
        plan.out.join("results.json").display(),
        plan.out.join("report.html").display()
    );
    Ok(())
}

/// Files and bytes under `dir` (recursively).
fn dir_size(dir: &std::path::Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

/// Says where the run databases are and how big they are.
fn report_runs(runs: &std::path::Path) {
    if runs.is_dir() {
        let (n, bytes) = dir_size(runs);
        eprintln!(
            "run databases (one per run, keel.db): {} — {n} files, {:.1} MB; delete the directory when done",
            runs.display(),
            bytes as f64 / 1e6
        );
    }
}

pub(crate) async fn simulate_cmd(a: SimulateArgs) -> Result<()> {
    let mut scenarios = Vec::new();
    for name in &a.scenarios {
        let mut s = Scenario::load(name)?;
        if let Some(k) = a.scale {
            s.traffic.conversations_per_tick *= k;
        }
        scenarios.push(s);
    }
    let sweep = match &a.sweep {
        None => None,
        Some(s) => {
            let (k, vs) = s.split_once('=').context("--sweep expects KEY=V1,V2,…")?;
            let vs: Vec<String> = vs.split(',').map(|v| v.trim().to_string()).collect();
            // Check the key and values before running anything.
            let mut probe = scenarios[0].clone();
            for v in &vs {
                probe.set(k.trim(), v)?;
            }
            Some((k.trim().to_string(), vs))
        }
    };
    let plan = Plan {
        scenarios,
        variants: variants(&a.variant)?,
        strategies: strategies(&a.strategy)?,
        seed: a.seed,
        out: a.out,
        sweep,
        concurrency: a.concurrency,
        parallel: a.parallel,
        progress: true,
    };
    let start = std::time::Instant::now();
    let (results, _) = simulate(&plan, false).await?;
    finish(&plan, &results, start.elapsed())?;
    report_runs(&plan.out.join("runs"));
    Ok(())
}

pub(crate) async fn sim_model(a: SimModelArgs) -> Result<()> {
    let s = Scenario::load(&a.scenario)?;
    let server = keel_sim::model::ModelServer::start(&s, a.listen).await?;
    eprintln!(
        "scenario model `{}` for `{}` listening; base URL:",
        s.model, s.name
    );
    println!("{}", server.base_url());
    tokio::select! {
        _ = server.wait() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(())
}

pub(crate) async fn demo(a: DemoArgs) -> Result<()> {
    let scenarios = keel_sim::scenario::SHOWCASE
        .iter()
        .map(|n| Scenario::load(n))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = Plan {
        scenarios,
        variants: Variant::ALL.to_vec(),
        strategies: Strategy::ALL.to_vec(),
        seed: a.seed,
        out: a.out,
        sweep: None,
        concurrency: 8,
        parallel: 2,
        progress: true,
    };
    let start = std::time::Instant::now();
    let (results, kept) = simulate(&plan, a.serve).await?;
    finish(&plan, &results, start.elapsed())?;
    let runs = plan.out.join("runs");
    if a.keep_runs || a.serve {
        report_runs(&runs);
    } else if runs.is_dir() {
        let (n, bytes) = dir_size(&runs);
        std::fs::remove_dir_all(&runs)
            .with_context(|| format!("removing the run databases in {}", runs.display()))?;
        eprintln!(
            "removed the {n} files ({:.1} MB) of the run databases in {} (--keep-runs keeps them)",
            bytes as f64 / 1e6,
            runs.display()
        );
    }
    if let Some(k) = kept {
        eprintln!(
            "serving the last run's gateway at {} (dashboard under /ui/ when built); an admin key:",
            k.url
        );
        eprintln!("{}", k.admin_key);
        eprintln!("press Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
        let _ = k.handle.shutdown().await;
        drop(k.model);
    }
    Ok(())
}
