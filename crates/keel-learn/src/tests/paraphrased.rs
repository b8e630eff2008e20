//! Learned-monitor quality on replies written apart from the training templates (other
//! phrasings, `tests/data/paraphrased.tsv`), next to the held-out rows of the same templates.
//! Run `cargo test -p keel-learn -- --nocapture paraphrased` for the numbers that
//! `docs/learned.md` reports.

use super::*;

/// The separately written set of `lang`.
fn written_apart(lang: &str) -> Vec<Sample> {
    include_str!("../../tests/data/paraphrased.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let cols: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(cols.len(), 4, "bad line: {l}");
            (cols[0] == lang).then(|| Sample {
                text: cols[3].to_string(),
                verdict: match cols[1] {
                    "ok" => "ok",
                    "outdated" => "outdated",
                    "violation" => "violation",
                    "wrong_answer" => "wrong_answer",
                    other => panic!("unknown verdict {other}"),
                },
                category: match cols[2] {
                    "-" => None,
                    "pii" => Some("pii"),
                    "medical" => Some("medical"),
                    other => panic!("unknown category {other}"),
                },
            })
        })
        .collect()
}

/// Trains as `learns` does (1,000 template replies), then scores the set written apart;
/// returns the verdict accuracy and that of answering `ok` to everything.
fn quality_written_apart(ja: bool) -> (f64, f64) {
    let lang = if ja { "ja" } else { "en" };
    let samples = stream(ja, 1_000, if ja { 7 } else { 3 });
    let mut model = Model::new(Config::default()).unwrap();
    train(&mut model, &samples);
    let set = written_apart(lang);
    let (acc, pr) = held_out(&model, &set);
    let majority = set.iter().filter(|s| s.verdict == "ok").count() as f64 / set.len() as f64;
    println!(
        "{lang}: written apart ({} replies): verdict accuracy {acc:.3} (all-ok baseline {majority:.3})",
        set.len()
    );
    for (l, p, r) in &pr {
        println!("{lang}: written apart {l}: precision {p:.3} recall {r:.3}");
    }
    (acc, majority)
}

#[test]
fn paraphrased_replies_english() {
    // Far below the 0.9 on held-out template rows (docs/learned.md gives both); what is
    // asserted is only that it beats answering `ok` to everything.
    let (acc, baseline) = quality_written_apart(false);
    assert!(acc > baseline, "en: accuracy {acc} vs baseline {baseline}");
}

#[test]
fn paraphrased_replies_japanese() {
    let (acc, baseline) = quality_written_apart(true);
    assert!(acc > baseline, "ja: accuracy {acc} vs baseline {baseline}");
}
