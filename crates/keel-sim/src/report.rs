//! Reports: `results.json`, the comparison table, and `report.html` (self-contained inline SVG:
//! no scripts, no network, works offline).

use std::fmt::Write as _;
use std::path::Path;

use crate::runner::RunResult;
use crate::SimError;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

const HEADER: [&str; 14] = [
    "scenario",
    "variant",
    "strategy",
    "sweep",
    "interactions",
    "bad_served",
    "withheld",
    "collateral",
    "detect_delay",
    "false_alarms/10k",
    "war_before",
    "war_after",
    "mtth_min",
    "review/1k",
];

fn cells(r: &RunResult) -> Vec<String> {
    let x = &r.row;
    vec![
        x.scenario.clone(),
        x.variant_str().into(),
        x.strategy_str().into(),
        x.sweep
            .as_ref()
            .map(|s| format!("{}={}", s.key, s.value))
            .unwrap_or_else(|| "-".into()),
        x.interactions.to_string(),
        x.bad_served.to_string(),
        x.withheld.to_string(),
        x.collateral.to_string(),
        opt(x.detect_delay, 1),
        format!("{:.1}", x.false_alarms_per_10k),
        opt(x.war_before, 3),
        opt(x.war_after, 3),
        opt(x.mtth_minutes, 0),
        format!("{:.1}", x.review_load_per_1k),
    ]
}

/// The comparison table as aligned text (stdout).
pub fn table(results: &[RunResult]) -> String {
    let rows: Vec<Vec<String>> = results.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(HEADER.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// Writes `results.json` and `report.html` into `dir`.
pub fn write(dir: &Path, results: &[RunResult], title: &str) -> Result<(), SimError> {
    std::fs::create_dir_all(dir)?;
    let rows: Vec<&crate::metrics::Row> = results.iter().map(|r| &r.row).collect();
    let mut json = serde_json::to_string_pretty(&rows)?;
    json.push('\n');
    std::fs::write(dir.join("results.json"), json)?;
    std::fs::write(dir.join("report.html"), html(results, title))?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 6] = [
    "#c0392b", "#e67e22", "#2471a3", "#229954", "#7d3c98", "#566573",
];

fn strategy_color(s: &str) -> &'static str {
    match s {
        "static" => COLORS[0],
        "monitor" => COLORS[1],
        "continual" => COLORS[2],
        _ => COLORS[5],
    }
}

const W: f64 = 760.0;
const H: f64 = 220.0;
const PAD: f64 = 44.0;

/// A line chart of bad replies per tick for the runs of one scenario and variant.
fn run_chart(runs: &[&RunResult]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let t0 = first.series.ticks.first().map(|t| t.at_ms).unwrap_or(0);
    let t1 = first
        .series
        .ticks
        .last()
        .map(|t| t.at_ms)
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let ymax = runs
        .iter()
        .flat_map(|r| r.series.ticks.iter().map(|t| t.bad + t.withheld))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |ms: i64| PAD + (ms - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD + 10.0 - v / ymax * (H - PAD - 10.0);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{PAD}\" y1=\"10\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"18\" font-size=\"11\">{ymax}</text><text x=\"4\" y=\"{b}\" font-size=\"11\">0</text>\
         <text x=\"{PAD}\" y=\"{lb}\" font-size=\"11\">day 0</text><text x=\"{r2}\" y=\"{lb}\" font-size=\"11\">day {days:.1}</text>",
        b = H - PAD + 10.0,
        r = W - PAD,
        r2 = W - PAD - 40.0,
        lb = H - PAD + 26.0,
        days = (t1 - t0) as f64 / 86_400_000.0,
    );
    for (name, at) in &first.series.changes {
        let _ = write!(
            svg,
            "<line x1=\"{x}\" y1=\"10\" x2=\"{x}\" y2=\"{b}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{tx}\" y=\"20\" font-size=\"11\">change: {n}</text>",
            x = x(*at),
            tx = x(*at) + 3.0,
            b = H - PAD + 10.0,
            n = esc(name)
        );
    }
    for (k, r) in runs.iter().enumerate() {
        let color = strategy_color(r.row.strategy_str());
        let pts: Vec<String> = r
            .series
            .ticks
            .iter()
            .map(|t| format!("{:.1},{:.1}", x(t.at_ms), y(t.bad as f64)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"/>",
            pts.join(" ")
        );
        for (_, at) in &r.series.mitigations {
            let _ = write!(
                svg,
                "<line x1=\"{x}\" y1=\"10\" x2=\"{x}\" y2=\"{b}\" stroke=\"{color}\" stroke-width=\"2\" opacity=\"0.6\"/>\
                 <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\" fill=\"{color}\">fixed</text>",
                x = x(*at),
                tx = x(*at) + 3.0,
                ty = 34.0 + 12.0 * k as f64,
                b = H - PAD + 10.0,
            );
        }
        for (at, true_alert) in &r.series.alerts {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\" stroke=\"{color}\"/>",
                x(*at),
                H - PAD + 4.0,
                if *true_alert { color } else { "#fff" }
            );
        }
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"11\">{n}</text>",
            lx = W - PAD - 110.0,
            ly = 24.0 + 14.0 * k as f64,
            tx = W - PAD - 96.0,
            ty = 33.0 + 14.0 * k as f64,
            n = r.row.strategy_str()
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Sweep plots: a metric against the swept value, one line per strategy.
fn sweep_chart(runs: &[&RunResult], metric: &str, get: fn(&RunResult) -> f64) -> String {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.row.sweep.as_ref().and_then(|s| s.value.parse().ok()))
        .collect();
    if values.is_empty() {
        return String::new();
    }
    let (x0, x1) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let ymax = runs.iter().map(|r| get(r)).fold(0.0, f64::max).max(1e-9);
    let (w, h) = (360.0, 200.0);
    let x = |v: f64| PAD + (v - x0) / (x1 - x0) * (w - 2.0 * PAD);
    let y = |v: f64| h - PAD + 10.0 - v / ymax * (h - PAD - 10.0);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"{PAD}\" y=\"12\" font-size=\"12\">{m}</text>\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"24\" font-size=\"10\">{ymax:.1}</text>\
         <text x=\"{PAD}\" y=\"{lb}\" font-size=\"10\">{x0}</text><text x=\"{r3}\" y=\"{lb}\" font-size=\"10\">{x1}</text>",
        m = esc(metric),
        b = h - PAD + 10.0,
        r = w - PAD,
        r3 = w - PAD - 20.0,
        lb = h - PAD + 24.0,
    );
    let mut strategies: Vec<&str> = runs.iter().map(|r| r.row.strategy_str()).collect();
    strategies.dedup();
    strategies.sort();
    strategies.dedup();
    for strat in strategies {
        let mut pts: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.row.strategy_str() == strat)
            .filter_map(|r| {
                r.row
                    .sweep
                    .as_ref()
                    .and_then(|s| s.value.parse::<f64>().ok())
                    .map(|v| (v, get(r)))
            })
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = strategy_color(strat);
        let line: Vec<String> = pts
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"/>",
            line.join(" ")
        );
        for (a, b) in pts {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x(a),
                y(b)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// What each column means, in words (the report's legend).
const LEGEND: [(&str, &str); 14] = [
    ("scenario", "the bundled value-change scenario replayed"),
    ("variant", "announced: the operator is told of the change; unannounced: only monitors can find it"),
    ("strategy", "static: the policy never changes; monitor: drift alerts reach reviewers; continual: alerts, reviews, proposals, backtests and canaries update the policy"),
    ("sweep", "the setting varied in a sweep run (- when none)"),
    ("interactions", "replies served in the run"),
    ("bad_served", "replies that were wrong at the simulated time they were served (the lower the better)"),
    ("withheld", "replies blocked or escalated instead of answered"),
    ("collateral", "withheld replies whose answer was in fact right"),
    ("detect_delay", "affected replies served before the first true alert (an alert whose slice lies in the change's scope and whose evidence names one of its affected replies; median over detected changes); - means no change was detected in that run (always for static, which has no monitors)"),
    ("false_alarms/10k", "alerts not caused by a change, per 10,000 replies"),
    ("war_before", "wrong-answer rate on the affected replies before the fix was in force (whole run when never fixed)"),
    ("war_after", "the same after the fix was fully in force; - when it never was"),
    ("mtth_min", "mean simulated minutes until a person took over a handoff or escalation; - when there were none"),
    ("review/1k", "review labels per 1,000 replies (the reviewers' load)"),
];

/// The headline: bad answers continual avoided compared with static, per scenario and variant
/// and in total (`None` without both strategies).
fn headline(results: &[RunResult]) -> Option<String> {
    let mut total = (0u64, 0u64);
    let mut parts = Vec::new();
    for r in results.iter().filter(|r| r.row.sweep.is_none()) {
        if r.row.strategy_str() != "static" {
            continue;
        }
        let Some(c) = results.iter().find(|c| {
            c.row.sweep.is_none()
                && c.row.strategy_str() == "continual"
                && c.row.scenario == r.row.scenario
                && c.row.variant_str() == r.row.variant_str()
        }) else {
            continue;
        };
        let (st, co) = (r.row.bad_served, c.row.bad_served);
        total.0 += st;
        total.1 += co;
        parts.push(format!(
            "{} ({}): {} → {}",
            r.row.scenario,
            r.row.variant_str(),
            st,
            co
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let avoided = total.0 as i64 - total.1 as i64;
    let share = if total.0 == 0 {
        0.0
    } else {
        avoided as f64 * 100.0 / total.0 as f64
    };
    Some(format!(
        "Continual updating avoided {avoided} of the {} bad answers the static policy served ({share:.0} %). Bad answers served, static → continual: {}.",
        total.0,
        parts.join("; ")
    ))
}

fn html(results: &[RunResult], title: &str) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1232px}}\
         .wide{{overflow-x:auto}}table{{border-collapse:collapse;font-size:12px}}\
         td,th{{border:1px solid #ccc;padding:2px 5px;text-align:right}}\
         th{{background:#f3f3f3;white-space:normal;max-width:90px}}td:nth-child(-n+4){{text-align:left}}h2{{margin-top:32px}}\
         svg{{max-width:100%;height:auto}}.headline{{font-size:18px;font-weight:600}}\
         .legend{{font-size:12px;color:#555}}dt{{font-weight:600;float:left;clear:left;width:130px}}dd{{margin-left:140px}}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    if let Some(h) = headline(results) {
        let _ = write!(out, "<p class=\"headline\">{}</p>", esc(&h));
    }
    out.push_str("<h2>Strategies compared</h2><div class=\"wide\"><table><tr>");
    for h in HEADER {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for r in results {
        out.push_str("<tr>");
        for c in cells(r) {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div><dl class=\"legend\">");
    for (k, v) in LEGEND {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    out.push_str("</dl>");
    let sweeping = results.iter().any(|r| r.row.sweep.is_some());
    // Charts per (scenario, variant[, sweep value]).
    let mut groups: Vec<(String, Vec<&RunResult>)> = Vec::new();
    for r in results {
        let key = format!(
            "{} — {}{}",
            r.row.scenario,
            r.row.variant_str(),
            r.row
                .sweep
                .as_ref()
                .map(|s| format!(" — {}={}", s.key, s.value))
                .unwrap_or_default()
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    if sweeping {
        out.push_str("<h2>What oversight buys</h2>");
        let mut keys: Vec<String> = results
            .iter()
            .map(|r| format!("{} — {}", r.row.scenario, r.row.variant_str()))
            .collect();
        keys.dedup();
        for k in keys {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| format!("{} — {}", r.row.scenario, r.row.variant_str()) == k)
                .collect();
            let key = runs
                .first()
                .and_then(|r| r.row.sweep.as_ref())
                .map(|s| s.key.clone())
                .unwrap_or_default();
            let _ = write!(out, "<h3>{} against {}</h3><div>", esc(&k), esc(&key));
            out.push_str(&sweep_chart(&runs, "bad_served", |r| {
                r.row.bad_served as f64
            }));
            out.push_str(&sweep_chart(&runs, "false alarms per 10k", |r| {
                r.row.false_alarms_per_10k
            }));
            out.push_str(&sweep_chart(&runs, "review load per 1k", |r| {
                r.row.review_load_per_1k
            }));
            out.push_str("</div>");
        }
    }
    out.push_str(
        "<h2>Over time</h2><p class=\"legend\">Bad replies per tick (graded against the truth at that simulated time). \
         Dashed black: a change takes effect. Coloured bars: that strategy's fix fully in force. \
         Dots on the axis: alerts (filled = true alert, hollow = false alarm).</p>",
    );
    for (k, runs) in groups {
        let _ = write!(out, "<h3>{}</h3>{}", esc(&k), run_chart(&runs));
    }
    out.push_str("</body></html>\n");
    out
}
