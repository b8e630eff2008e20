//! Setting a run up: the gateway configuration a scenario and strategy need.

use std::path::Path;

use super::Strategy;
use crate::scenario::Scenario;

pub(super) fn sim_config(s: &Scenario, strategy: Strategy, dir: &Path, model_url: &str) -> String {
    let g = &s.gateway;
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {dir:?}\n[storage]\nurl = {url:?}\ndurability = \"async\"\n\
         [[upstreams]]\nname = \"scenario-model\"\nbase_url = {model_url:?}\nmodels = [\"*\"]\ntimeout_ms = 30000\nretries = 0\n\
         [ledger]\ncheckpoint_every_events = 1000000\ncheckpoint_every_ms = 86400000000\n",
        dir = dir.display().to_string(),
        url = format!("sqlite://{}", dir.join("keel.db").display()),
    );
    t.push_str(&format!(
        "[sim]\nmanual_clock = true\nstart_ms = {}\n",
        s.start_ms - s.tick_ms
    ));
    match strategy {
        Strategy::Static => t.push_str(
            "[monitors]\nrules = []\n[monitors.slices]\nenabled = false\n[review]\nsample_rate = 0.0\n",
        ),
        _ => {
            let complaint: Vec<String> = s
                .users
                .complaint_text
                .values()
                .map(|c| format!("{c:?}"))
                .collect();
            t.push_str(&format!(
                "[monitors]\nmin_samples = {}\ncomplaint_terms = [{}]\n",
                g.min_samples,
                complaint.join(", ")
            ));
            // Wrong-answer reports and complaints are low rates: the monitor's default slices
            // (rate CUSUM per answer cluster and topic) watch them, not ADWIN.
            for (metric, change) in [
                ("csat", g.min_change * 10.0),
                ("escalate_rate", g.min_change),
                ("block_rate", g.min_change),
            ] {
                t.push_str(&format!(
                    "[[monitors.rules]]\nmetric = \"{metric}\"\ndetector = \"adwin:delta={}\"\nmin_change = {change}\n",
                    g.delta
                ));
            }
            t.push_str(&format!("[review]\nsample_rate = {}\n", g.sample_rate));
            // Canaries are judged on this scenario's traffic, not a production day's.
            t.push_str("[update]\nmin_samples_per_arm = 40\n");
            if let Some(j) = &s.judge {
                t.push_str(&crate::judge::gateway_toml(j, model_url));
            }
        }
    }
    t
}
