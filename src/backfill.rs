//! `keel drift backfill`: the configured monitors over recorded history, as a report.

use std::sync::Arc;

use crate::open_store;
use anyhow::{Context, Result};
use keel_core::clock::format_ms;
use keel_core::Clock;
use keel_loop::watch::Monitor;

use crate::{load, ConfigArg};

/// Parses `7d` / `24h` / `90m` (relative to now), RFC 3339, or YYYY-MM-DD into Unix ms.
pub(crate) fn parse_since(s: &str, now_ms: i64) -> Result<i64> {
    let unit = |suffix: char, ms: i64| -> Option<i64> {
        s.strip_suffix(suffix)?
            .parse::<i64>()
            .ok()
            .map(|n| now_ms - n * ms)
    };
    if let Some(t) = unit('d', 86_400_000)
        .or_else(|| unit('h', 3_600_000))
        .or_else(|| unit('m', 60_000))
    {
        return Ok(t);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--since `{s}`: use 7d, 24h, 90m, RFC 3339 or YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .context("invalid date")?
        .and_utc()
        .timestamp_millis())
}

pub async fn run(config: &ConfigArg, since: &str, clock: Arc<dyn Clock>) -> Result<()> {
    let config = load(config)?;
    let since_ms = parse_since(since, clock.now_ms())?;
    let mut monitor = Monitor::new(config.monitors.clone())?;
    let store = open_store(&config).await?;
    let mut cursor = 0i64;
    let mut events = 0u64;
    let mut drafts = Vec::new();
    let result: Result<()> = async {
        loop {
            let page = store.events_after(cursor, 5_000).await?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            for ev in page.iter().filter(|e| e.at_ms >= since_ms) {
                events += 1;
                drafts.extend(monitor.process(ev)?);
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    result?;
    eprintln!(
        "backfill over {events} events since {} across {} streams: {} alerts would have been raised",
        format_ms(since_ms),
        monitor.streams(),
        drafts.len()
    );
    println!("RAISED_AT\tSEQ\tMETRIC\tSEGMENT\tBEFORE\tAFTER\tSEVERITY");
    for d in drafts {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            format_ms(d.at_ms),
            d.seq,
            d.metric,
            d.segment.key(),
            f(d.before),
            f(d.after),
            d.severity
        );
    }
    Ok(())
}
