//! The `keel` command: the gateway server and the operator verbs.
//!
//! Logs and progress go to stderr; stdout carries only each command's result.

mod alerts;
mod audit;
mod backfill;
mod facts;
mod interactions;
mod learn;
mod policy;
mod review;
mod sim;
mod update;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use keel_core::clock::format_ms;
use keel_core::{Clock, Role, SystemClock};
use keel_gateway::config::LogFormat;
use keel_gateway::Config;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Keeps deployed LLM applications aligned with values, laws and facts that change after training."
)]
struct Cli {
    /// Log format on stderr (overrides `[log] format`). The filter comes from KEEL_LOG.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Args, Clone)]
pub(crate) struct ConfigArg {
    /// The TOML config file (also KEEL_CONFIG).
    #[arg(long, env = "KEEL_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum ConfigVerb {
    /// Validate FILE and print the effective config (secrets masked).
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Config files: `check FILE` validates it (with `KEEL_<SECTION>__<KEY>` overrides) and prints
    /// the effective config with secrets masked; a bad file exits non-zero naming the key.
    Config {
        #[command(subcommand)]
        verb: ConfigVerb,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        verb: KeysVerb,
    },
    /// Policy bundles: lint, test, diff (no config); publish, activate, list (config).
    Policy {
        #[command(subcommand)]
        verb: PolicyVerb,
    },
    /// Facts with effective dates: set, list [--at DATE], history KEY, import FILE.
    Facts {
        #[command(subcommand)]
        verb: facts::FactsVerb,
    },
    /// Streaming change detectors.
    Drift {
        #[command(subcommand)]
        verb: DriftVerb,
    },
    /// The tamper-evident ledger: verify, checkpoint, prove, pubkey, erase.
    Audit {
        #[command(subcommand)]
        verb: AuditVerb,
    },
    /// Drift alerts: list, show, ack and resolve (open → acknowledged → resolved).
    Alerts {
        #[command(subcommand)]
        verb: alerts::AlertsVerb,
    },
    /// The review queue: list, show, claim and label items.
    Review {
        #[command(subcommand)]
        verb: review::ReviewVerb,
    },
    /// KPIs as a table: CSAT, wrong-answer, violation and escalation rates, time to human,
    /// review load; comparisons of periods or policy versions.
    Kpis(review::KpisArgs),
    /// Recorded interactions: list (newest first) and show one.
    Interactions {
        #[command(subcommand)]
        verb: interactions::InteractionsVerb,
    },
    /// Training datasets from reviewed corrections (PII redacted): sft or dpo JSONL.
    Export {
        #[command(subcommand)]
        verb: review::ExportVerb,
    },
    /// Classifiers that learn from every review: status (prequential precision/recall per
    /// label), rebuild (retrain from the event history and compare with the online model).
    Learn {
        #[command(subcommand)]
        verb: learn::LearnVerb,
    },
    /// The main job, shown: a fixed showcase of bundled scenarios under every strategy; prints the
    /// comparison table, writes ./keel-demo/results.json and report.html. No config needed.
    Demo(sim::DemoArgs),
    /// Stress tests: replay scenarios through the real gateway and grade every reply.
    Simulate(sim::SimulateArgs),
    /// Serve a scenario's frozen model alone (OpenAI-compatible, JSON and SSE).
    SimModel(sim::SimModelArgs),
}

#[derive(Subcommand)]
pub(crate) enum PolicyVerb {
    /// Check bundles; errors name the file, line and rule id.
    Lint {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Run bundles' inline tests; non-zero exit naming each failing case.
    Test {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// What changed between two bundles.
    Diff {
        /// A bundle directory, or a published version id (or unambiguous prefix; needs --config).
        from: PathBuf,
        /// Same as FROM.
        to: PathBuf,
        /// The config whose store holds published versions (also KEEL_CONFIG).
        #[arg(long, env = "KEEL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish a bundle as a new version (prints the version id); its tests must pass.
    Publish {
        #[command(flatten)]
        config: ConfigArg,
        dir: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Make a version active for every tenant, or for one (`--tenant`); a running server
    /// switches within a second.
    Activate {
        #[command(flatten)]
        config: ConfigArg,
        version: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Why (recorded in the ledger; required with --allow-weaker-than-default).
        #[arg(long)]
        reason: Option<String>,
        /// Activate a version that lacks the default pack's hazard, PII or facts protections
        /// (see `keel policy lint`); needs --reason.
        #[arg(long)]
        allow_weaker_than_default: bool,
    },
    /// Published versions and where they are active.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Start a rollout: a canary at `--percent` below 100 (sticky split by conversation id),
    /// an activation at 100. Prints the rollout id.
    Rollout {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        version: String,
        #[arg(long)]
        percent: f64,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        locale: Option<String>,
        /// Why (default "rollout from the CLI"; required with --allow-weaker-than-default).
        #[arg(long)]
        reason: Option<String>,
        /// Roll out a version that lacks the default pack's hazard, PII or facts protections;
        /// needs --reason.
        #[arg(long)]
        allow_weaker_than_default: bool,
    },
    /// Promote a canary to 100 %.
    Promote {
        #[command(flatten)]
        config: ConfigArg,
        rollout: String,
        #[arg(long)]
        reason: String,
    },
    /// Roll a canary back (or a promoted rollout to its baseline).
    Rollback {
        #[command(flatten)]
        config: ConfigArg,
        rollout: String,
        #[arg(long)]
        reason: String,
    },
    /// Rollouts with their per-arm guard readings.
    Rollouts {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (every field) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Replay recorded interactions through a candidate (a bundle directory, a proposal id or
    /// a published version) and print what would change (JSON).
    Backtest {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        candidate: String,
        /// `7d`, `24h`, an RFC 3339 time or YYYY-MM-DD.
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Versions, rollouts, fact changes and proposals: who, why, when, outcome.
    History {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Draft a proposal from a review's suggestion (`--review ID`) or a suggestion given as
    /// JSON (`--suggestion '{"kind":"rewrite","from":"…","to":"…"}'`). Prints the proposal.
    Propose {
        #[command(flatten)]
        config: ConfigArg,
        /// Draft from a review item's label (its suggestion).
        #[arg(long, conflicts_with = "suggestion")]
        review: Option<String>,
        /// Draft from a suggestion given as JSON (then --reason is required).
        #[arg(long, required_unless_present = "review")]
        suggestion: Option<String>,
        /// Why. Required with --suggestion; with --review it defaults to "review RV".
        #[arg(long, required_unless_present = "review")]
        reason: Option<String>,
    },
    /// Proposals, newest first.
    Proposals {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Approve a proposal (a policy candidate is published, not activated).
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        proposal: String,
        #[arg(long)]
        reason: String,
    },
    /// Reject a proposal.
    Reject {
        #[command(flatten)]
        config: ConfigArg,
        proposal: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum DriftVerb {
    /// Feed a stream through a detector; print each detection index (0-based) on stdout and a
    /// summary (count, updates/s) on stderr. No config, database or async runtime.
    Replay {
        /// e.g. `adwin:delta=0.002`, `page-hinkley`, `cusum:k=0.5,h=5`, `kswin:alpha=0.005`
        #[arg(long)]
        detector: String,
        /// `f64` (little-endian f64 values) or `csv` (one number per line)
        #[arg(long, default_value = "f64")]
        format: String,
        /// The stream file (`-` for stdin).
        file: PathBuf,
    },
    /// Re-run the configured monitors over recorded history into a report (no live alerts).
    Backfill {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back: `7d`, `24h`, `90m`, an RFC 3339 time or YYYY-MM-DD.
        #[arg(long, default_value = "7d")]
        since: String,
    },
}

/// `keel drift replay`: synchronous on purpose, timed as a whole process.
fn drift_replay(detector: &str, format: &str, file: &std::path::Path) -> Result<()> {
    use std::io::{BufWriter, Read, Write};
    let format: keel_drift::Format = format.parse()?;
    let input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        )
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let summary = keel_drift::replay(detector, format, std::io::BufReader::new(input), &mut out)?;
    out.flush()?;
    eprintln!("{summary}");
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum AuditVerb {
    /// Recompute every leaf and the tree, check every checkpoint; exit 1 naming the first bad index.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Sign and store a checkpoint now; prints the signed note.
    Checkpoint {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print an inclusion proof (JSON) for a ledger index against the latest checkpoint.
    Prove {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        index: u64,
        /// Tree size to prove against (default: the latest checkpoint's).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Print the checkpoint verifier key.
    Pubkey {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Erase payloads (and their salts); proofs stay valid; records PayloadErased events.
    Erase {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, group = "target")]
        index: Option<u64>,
        #[arg(long, group = "target")]
        conversation: Option<String>,
        #[arg(long, group = "target")]
        user: Option<String>,
        /// RFC 3339 time or YYYY-MM-DD: everything recorded before it.
        #[arg(long, group = "target")]
        before: Option<String>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum KeysVerb {
    /// Create a key; its token is printed once, on the last stdout line.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// Tenant the key belongs to (`*` for operators who see all tenants).
        #[arg(long)]
        tenant: String,
        /// app | reviewer | admin | auditor
        #[arg(long)]
        role: String,
        /// The person or system the key is for (recorded as the actor of its actions).
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their tokens).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a key by id; a running server refuses it at once.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        key_id: String,
    },
}

/// Logging for one-shot verbs: warnings and errors only unless KEEL_LOG asks for more (their
/// result is what they print; `serve` logs at info).
fn init_logging(format: LogFormat) {
    init_logging_at(format, "warn");
}

/// Logging to stderr with `default` as the filter unless KEEL_LOG is set; ANSI colour only when
/// stderr is a terminal (never in a file or a pipe).
fn init_logging_at(format: LogFormat, default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The CLI's operator as the service layer sees it: an admin of every tenant.
pub(crate) fn cli_operator() -> keel_service::Actor {
    let who = cli_actor();
    keel_service::Actor::operator(&who, who.trim_start_matches("cli:"))
}

pub(crate) fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    )
}

/// Opens the configured store (creating and migrating it if absent).
pub(crate) async fn open_store(config: &Config) -> Result<Arc<dyn keel_store::Store>> {
    Ok(keel_service::open_store(&config.storage_url(), config.storage.durability).await?)
}

pub(crate) fn load(arg: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&arg.config)?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Drift {
        verb:
            DriftVerb::Replay {
                detector,
                format,
                file,
            },
    } = &cli.command
    {
        return match drift_replay(detector, format, file) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let log_override = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Serve(arg) => {
            let config = load(&arg)?;
            init_logging_at(log_override.unwrap_or(config.log.format), "info");
            serve(config, clock).await
        }
        Command::Keys { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            keys(verb, clock).await
        }
        Command::Policy { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            policy::run(verb, clock).await
        }
        Command::Facts { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            facts::run(verb, clock).await
        }
        Command::Drift {
            verb: DriftVerb::Backfill { config, since },
        } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            backfill::run(&config, &since, clock).await
        }
        Command::Drift { .. } => Ok(()), // replay is handled before the runtime starts
        Command::Audit { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            audit::run(verb, clock).await
        }
        Command::Alerts { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            alerts::run(verb, clock).await
        }
        Command::Review { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            review::review(verb, clock).await
        }
        Command::Kpis(args) => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            review::kpis(args, clock).await
        }
        Command::Config {
            verb: ConfigVerb::Check { file },
        } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            let config = keel_gateway::Config::load(&file)?;
            print!("{}", config.effective_toml()?);
            Ok(())
        }
        Command::Interactions { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            interactions::run(verb).await
        }
        Command::Export { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            review::export(verb, clock).await
        }
        Command::Learn { verb } => {
            init_logging(log_override.unwrap_or(LogFormat::Text));
            learn::run(verb).await
        }
        // Simulations start many gateways: only warnings unless KEEL_LOG says otherwise.
        Command::Demo(args) => {
            init_logging_at(
                log_override.unwrap_or(LogFormat::Text),
                "warn,keel_gateway=error",
            );
            sim::demo(args).await
        }
        Command::Simulate(args) => {
            init_logging_at(
                log_override.unwrap_or(LogFormat::Text),
                "warn,keel_gateway=error",
            );
            sim::simulate_cmd(args).await
        }
        Command::SimModel(args) => {
            init_logging_at(
                log_override.unwrap_or(LogFormat::Text),
                "warn,keel_gateway=error",
            );
            sim::sim_model(args).await
        }
    }
}

async fn serve(config: Config, clock: Arc<dyn Clock>) -> Result<()> {
    let store = open_store(&config).await.context("opening the store")?;
    let handle = keel_gateway::serve(config, store, clock, None).await?;
    let stop = handle.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    handle.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn keys(verb: KeysVerb, clock: Arc<dyn Clock>) -> Result<()> {
    match verb {
        KeysVerb::Create {
            config,
            tenant,
            role,
            name,
        } => {
            let role = Role::parse(&role)?;
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let minted = keel_service::keys::create(
                store.as_ref(),
                clock.as_ref(),
                &cli_operator(),
                &tenant,
                role,
                name,
            )
            .await;
            store.close().await;
            let minted = minted?;
            eprintln!(
                "created key {} (tenant {}, role {}); it is shown once:",
                minted.record.key_id,
                minted.record.tenant,
                minted.record.role.as_str()
            );
            println!("{}", minted.token);
        }
        KeysVerb::List { config } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let keys = keel_service::keys::list(store.as_ref(), &cli_operator()).await;
            store.close().await;
            let keys = keys?;
            println!("KEY_ID\tTENANT\tROLE\tNAME\tCREATED\tREVOKED");
            for k in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.tenant,
                    k.role.as_str(),
                    k.name.as_deref().unwrap_or("-"),
                    format_ms(k.created_ms),
                    k.revoked_ms.map(format_ms).unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysVerb::Revoke { config, key_id } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = keel_service::keys::revoke(
                store.as_ref(),
                clock.as_ref(),
                &cli_operator(),
                &key_id,
            )
            .await;
            store.close().await;
            result?;
            println!("{key_id}");
        }
    }
    Ok(())
}
