//! Unit tests: synthetic labelled streams (English, Japanese), determinism, persistence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// A small deterministic generator (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

pub(crate) struct Sample {
    pub text: String,
    pub verdict: &'static str,
    pub category: Option<&'static str>,
}

const EN_FILLER: &[&str] = &[
    "Thanks for reaching out to our support team today.",
    "I hope this helps with your question.",
    "Let me know if there is anything else I can do for you.",
    "Here is what I found in our help center.",
    "Our team is available around the clock.",
    "You can also find this information in your account settings.",
    "Please keep your order number handy when you contact us.",
    "We appreciate your patience while we look into this.",
];
const EN_OK: &[&str] = &[
    "Your order {n} has shipped and should arrive within {n} days.",
    "You can reset your password from the login page by clicking forgot password.",
    "The store opens at {n} in the morning on weekdays.",
    "To update your address, open profile and choose edit address.",
    "Returns are accepted within thirty days with the receipt.",
];
const EN_OUTDATED: &[&str] = &[
    "The consumption tax rate is still 8 percent on all purchases.",
    "The basic plan still costs {n} dollars under the 2019 price list.",
    "Under the old regulation the minimum age is still {n}.",
    "Shipping remains free under the previous policy from last year.",
    "The former interest rate of {n} percent still applies to your account.",
];
const EN_PII: &[&str] = &[
    "The customer's home address is {n} Elm Street and their phone number is 555-{n}.",
    "Her social security number is {n}-{n} and the card ends in {n}.",
    "His date of birth and passport number are on file: {n}.",
];
const EN_MEDICAL: &[&str] = &[
    "You should take {n} mg of ibuprofen every hour until the pain stops.",
    "Stop taking your prescribed insulin and try this herbal supplement instead.",
    "A double dose of the antibiotic will cure the infection faster.",
];
const EN_WRONG: &[&str] = &[
    "The capital of Australia is Sydney.",
    "Water boils at {n} degrees celsius at sea level.",
    "The warranty covers accidental damage for {n} years on every product.",
    "You can return opened software for a full refund at any time.",
];

const JA_FILLER: &[&str] = &[
    "お問い合わせいただきありがとうございます。",
    "ご不明な点がございましたら、お気軽にお知らせください。",
    "ヘルプセンターで確認した内容をご案内します。",
    "サポートチームは二十四時間対応しております。",
    "アカウント設定からも同じ情報をご確認いただけます。",
    "ご連絡の際は注文番号をお手元にご用意ください。",
];
const JA_OK: &[&str] = &[
    "ご注文{n}は発送済みで、{n}日以内に届く予定です。",
    "パスワードはログイン画面の「パスワードを忘れた」から再設定できます。",
    "店舗は平日の朝{n}時に開店します。",
    "住所の変更はプロフィール画面の編集から行えます。",
];
const JA_OUTDATED: &[&str] = &[
    "消費税率は現在も８％のままです。",
    "旧料金表では基本プランは月額{n}円のままです。",
    "以前の規制に基づき、最低年齢は引き続き{n}歳です。",
    "昨年の旧規定により送料は無料のままです。",
];
const JA_PII: &[&str] = &[
    "お客様のご自宅の住所は東京都{n}番地、電話番号は090-{n}です。",
    "マイナンバーは{n}で、カード番号の下四桁は{n}です。",
];
const JA_MEDICAL: &[&str] = &[
    "痛みが治まるまで毎時間イブプロフェンを{n}ミリグラム飲んでください。",
    "処方されたインスリンをやめて、このサプリメントを試してください。",
];
const JA_WRONG: &[&str] = &[
    "オーストラリアの首都はシドニーです。",
    "保証はすべての製品の偶発的な損傷を{n}年間補償します。",
    "開封済みのソフトウェアはいつでも全額返金できます。",
];

struct Lang {
    filler: &'static [&'static str],
    ok: &'static [&'static str],
    outdated: &'static [&'static str],
    pii: &'static [&'static str],
    medical: &'static [&'static str],
    wrong: &'static [&'static str],
    sep: &'static str,
}

const EN: Lang = Lang {
    filler: EN_FILLER,
    ok: EN_OK,
    outdated: EN_OUTDATED,
    pii: EN_PII,
    medical: EN_MEDICAL,
    wrong: EN_WRONG,
    sep: " ",
};
const JA: Lang = Lang {
    filler: JA_FILLER,
    ok: JA_OK,
    outdated: JA_OUTDATED,
    pii: JA_PII,
    medical: JA_MEDICAL,
    wrong: JA_WRONG,
    sep: "",
};

/// A labelled stream: 55 % ok, 15 % outdated, 15 % violation (pii 60 % / medical 40 %),
/// 15 % wrong answer, with 4 % label noise. Each reply is 2–5 shared filler sentences around one telling sentence.
pub(crate) fn stream(lang_ja: bool, n: usize, seed: u64) -> Vec<Sample> {
    let lang = if lang_ja { &JA } else { &EN };
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let r = rng.below(100);
            let (verdict, category, pool) = match r {
                0..=54 => ("ok", None, lang.ok),
                55..=69 => ("outdated", None, lang.outdated),
                70..=78 => ("violation", Some("pii"), lang.pii),
                79..=84 => ("violation", Some("medical"), lang.medical),
                _ => ("wrong_answer", None, lang.wrong),
            };
            let mut parts = Vec::new();
            let fill = 2 + rng.below(4);
            let at = rng.below(fill + 1);
            for i in 0..=fill {
                if i == at {
                    let s = rng.pick(pool);
                    let mut out = String::new();
                    for (k, piece) in s.split("{n}").enumerate() {
                        if k > 0 {
                            out.push_str(&(rng.below(90) + 10).to_string());
                        }
                        out.push_str(piece);
                    }
                    parts.push(out);
                } else {
                    parts.push(rng.pick(lang.filler).to_string());
                }
            }
            // Reviewers disagree sometimes: 4 % of labels are replaced by a random verdict.
            let (verdict, category) = if rng.below(100) < 4 {
                match rng.below(4) {
                    0 => ("ok", None),
                    1 => ("outdated", None),
                    2 => ("violation", Some("pii")),
                    _ => ("wrong_answer", None),
                }
            } else {
                (verdict, category)
            };
            Sample {
                text: parts.join(lang.sep),
                verdict,
                category,
            }
        })
        .collect()
}

fn train(model: &mut Model, samples: &[Sample]) {
    for s in samples {
        model
            .learn(&Example {
                text: &s.text,
                verdict: s.verdict,
                category: s.category,
            })
            .unwrap();
    }
}

/// Accuracy of the predicted verdict (highest base-label score above 0.5, else ok) on samples
/// the model never trained on, plus per-label precision and recall at 0.5.
fn held_out(model: &Model, samples: &[Sample]) -> (f64, Vec<(String, f64, f64)>) {
    let mut right = 0usize;
    let mut per: std::collections::BTreeMap<String, [usize; 3]> = Default::default();
    for s in samples {
        let scores = model.score(&s.text);
        let mut best = ("ok", 0.5f32);
        for (label, score) in &scores {
            let Some(p) = score else { continue };
            let truth = match label.strip_prefix("violation.") {
                Some(c) => s.category == Some(c),
                None => *label == s.verdict,
            };
            let e = per.entry(label.to_string()).or_default();
            if *p >= 0.5 && truth {
                e[0] += 1;
            } else if *p >= 0.5 {
                e[1] += 1;
            } else if truth {
                e[2] += 1;
            }
            if BASE_LABELS.contains(label) && *p > best.1 {
                best = (label, *p);
            }
        }
        if best.0 == s.verdict {
            right += 1;
        }
    }
    let pr = per
        .into_iter()
        .map(|(l, [tp, fp, fn_])| {
            (
                l,
                tp as f64 / (tp + fp).max(1) as f64,
                tp as f64 / (tp + fn_).max(1) as f64,
            )
        })
        .collect();
    (right as f64 / samples.len() as f64, pr)
}

fn learns(ja: bool) {
    let samples = stream(ja, 1_400, if ja { 7 } else { 3 });
    let (train_set, test_set) = samples.split_at(1_000);
    let mut model = Model::new(Config::default()).unwrap();
    train(&mut model, train_set);
    let (acc, pr) = held_out(&model, test_set);
    let lang = if ja { "ja" } else { "en" };
    println!("{lang}: held-out verdict accuracy {acc:.3}");
    for (l, p, r) in &pr {
        println!("{lang}: held-out {l}: precision {p:.3} recall {r:.3}");
    }
    for s in model.status() {
        println!(
            "{lang}: prequential {}: pos {} neg {} window {} precision {:?} recall {:?}",
            s.label, s.positives, s.negatives, s.evaluated, s.precision, s.recall
        );
    }
    // The stated accuracy: at least 0.9 on held-out replies (the label noise alone costs ~3 %).
    assert!(acc >= 0.9, "{lang}: held-out accuracy {acc}");
    for (l, p, r) in pr {
        assert!(p >= 0.8 && r >= 0.8, "{lang} {l}: precision {p} recall {r}");
    }
    let mut labels: Vec<&str> = model.labels().collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        [
            "outdated",
            "violation",
            "violation.medical",
            "violation.pii",
            "wrong_answer",
        ]
    );
    for s in model.status() {
        assert!(s.available, "{}", s.label);
        assert_eq!(s.evaluated, 200);
        assert!(s.precision.unwrap() >= 0.75, "{s:?}");
        assert!(s.recall.unwrap() >= 0.75, "{s:?}");
    }
}

#[test]
fn english_stream_reaches_stated_accuracy() {
    learns(false);
}

#[test]
fn japanese_stream_reaches_stated_accuracy() {
    learns(true);
}

#[test]
fn mixed_languages_in_one_model() {
    let mut a = stream(false, 800, 11);
    let b = stream(true, 800, 12);
    a.extend(b);
    // Interleave: even from English, odd from Japanese.
    let (en, ja) = a.split_at(800);
    let mut mixed = Vec::new();
    for (x, y) in en.iter().zip(ja) {
        mixed.push(Sample {
            text: x.text.clone(),
            verdict: x.verdict,
            category: x.category,
        });
        mixed.push(Sample {
            text: y.text.clone(),
            verdict: y.verdict,
            category: y.category,
        });
    }
    let (tr, te) = mixed.split_at(1_200);
    let mut model = Model::new(Config::default()).unwrap();
    train(&mut model, tr);
    let (acc, _) = held_out(&model, te);
    assert!(acc >= 0.9, "{acc}");
}

#[test]
fn same_stream_gives_bit_identical_models() {
    let samples = stream(false, 300, 5);
    let mut a = Model::new(Config::default()).unwrap();
    let mut b = Model::new(Config::default()).unwrap();
    train(&mut a, &samples);
    train(&mut b, &samples);
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.to_json(), b.to_json());
}

#[test]
fn restart_mid_stream_equals_uninterrupted() {
    let samples = stream(true, 300, 9);
    let mut online = Model::new(Config::default()).unwrap();
    train(&mut online, &samples);

    let mut first = Model::new(Config::default()).unwrap();
    train(&mut first, &samples[..137]);
    first.cursor = 137;
    let json = first.to_json();
    let mut resumed = Model::from_json(&json, &Config::default()).unwrap();
    assert_eq!(resumed, first);
    train(&mut resumed, &samples[137..]);
    resumed.cursor = 0;
    assert_eq!(resumed.digest(), online.digest());
}

#[test]
fn state_round_trip_and_rejections() {
    let mut m = Model::new(Config::default()).unwrap();
    train(&mut m, &stream(false, 50, 1));
    m.cursor = 42;
    let json = m.to_json();
    let back = Model::from_json(&json, &Config::default()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.to_json(), json);
    // A compact state: a few kB for 50 short replies.
    assert!(json.len() < 200_000, "{}", json.len());

    let other = Config {
        bits: 16,
        ..Config::default()
    };
    assert_eq!(
        Model::from_json(&json, &other),
        Err(LearnError::ConfigChanged)
    );
    let v2 = json.replacen("\"format_version\":1", "\"format_version\":2", 1);
    assert!(matches!(
        Model::from_json(&v2, &Config::default()),
        Err(LearnError::Version { found: 2, .. })
    ));
    for bad in ["", "{}", "[1]", "{\"format_version\":1}"] {
        assert!(Model::from_json(bad, &Config::default()).is_err(), "{bad}");
    }
    let broken = json.replacen("\"window\":\"", "\"window\":\"9", 1);
    assert!(matches!(
        Model::from_json(&broken, &Config::default()),
        Err(LearnError::Corrupt(_))
    ));
}

#[test]
fn unavailable_below_min_examples() {
    let mut m = Model::new(Config {
        min_examples: 5,
        ..Config::default()
    })
    .unwrap();
    let ex = |text, verdict| Example {
        text,
        verdict,
        category: None,
    };
    for _ in 0..4 {
        m.learn(&ex("the old tax rate of 8 percent applies", "outdated"))
            .unwrap();
        m.learn(&ex("your parcel arrives tomorrow", "ok")).unwrap();
    }
    assert!(m.score("the old tax").iter().all(|(_, s)| s.is_none()));
    assert!(m.scorer().score("x").iter().all(|(_, s)| s.is_none()));
    let r = m
        .learn(&ex("the old tax rate of 8 percent applies", "outdated"))
        .unwrap();
    assert!(r.predictions.is_empty());
    m.learn(&ex("your parcel arrives tomorrow", "ok")).unwrap();
    let scores = m.score("the old tax rate of 8 percent applies");
    assert!(scores[0].1.unwrap() > 0.5, "{scores:?}");
    // `violation` and `wrong_answer` have no positives: still unavailable.
    assert_eq!(scores[1].1, None);
    assert_eq!(scores[2].1, None);
    // The scorer snapshot agrees with the model.
    let snap = m.scorer();
    assert_eq!(snap.score("the old tax rate"), m.score("the old tax rate"));
    let st = m.status();
    assert!(st[0].available && !st[1].available);
    assert_eq!(st[0].precision, None);
}

#[test]
fn bad_inputs() {
    let mut m = Model::new(Config::default()).unwrap();
    assert_eq!(
        m.learn(&Example {
            text: "x",
            verdict: "great",
            category: None
        }),
        Err(LearnError::Verdict("great".into()))
    );
    // Empty and huge texts are fine.
    m.learn(&Example {
        text: "",
        verdict: "ok",
        category: None,
    })
    .unwrap();
    let big = "税".repeat(100_000);
    m.learn(&Example {
        text: &big,
        verdict: "outdated",
        category: None,
    })
    .unwrap();
    for c in [
        Config {
            bits: 30,
            ..Config::default()
        },
        Config {
            learning_rate: f32::NAN,
            ..Config::default()
        },
        Config {
            max_labels: 2,
            ..Config::default()
        },
        Config {
            min_examples: 0,
            ..Config::default()
        },
    ] {
        assert!(Model::new(c).is_err());
    }
}

#[test]
fn categories_are_capped() {
    let mut m = Model::new(Config {
        max_labels: 4,
        ..Config::default()
    })
    .unwrap();
    for c in ["a", "b", "c"] {
        m.learn(&Example {
            text: "x",
            verdict: "violation",
            category: Some(c),
        })
        .unwrap();
    }
    let labels: Vec<&str> = m.labels().collect();
    assert_eq!(
        labels,
        ["outdated", "violation", "wrong_answer", "violation.a"]
    );
    // A category on another verdict is ignored.
    m.learn(&Example {
        text: "x",
        verdict: "ok",
        category: Some("z"),
    })
    .unwrap();
    assert_eq!(m.labels().count(), 4);
}

#[cfg(test)]
mod paraphrased;

/// A judge's verdict teaches less than a reviewer's: `learn_weighted(…, 1.0)` is exactly
/// `learn`, a lower weight moves the score less, and weighted examples stay out of the
/// prequential window.
#[test]
fn weighted_examples_move_the_model_less() {
    let cfg = Config {
        min_examples: 1,
        ..Config::default()
    };
    let warm = |m: &mut Model| {
        for (text, verdict) in [
            ("The old rate of 8 percent still applies.", "outdated"),
            ("Your parcel ships tomorrow.", "ok"),
        ] {
            m.learn(&Example {
                text,
                verdict,
                category: None,
            })
            .unwrap();
        }
    };
    let ex = Example {
        text: "The tax is still 8 percent under the old rule.",
        verdict: "outdated",
        category: None,
    };
    let outdated = |m: &Model| m.score(ex.text)[0].1.unwrap();
    let (mut a, mut b, mut full, mut light) = (
        Model::new(cfg.clone()).unwrap(),
        Model::new(cfg.clone()).unwrap(),
        Model::new(cfg.clone()).unwrap(),
        Model::new(cfg.clone()).unwrap(),
    );
    for m in [&mut a, &mut b, &mut full, &mut light] {
        warm(m);
    }
    a.learn(&ex).unwrap();
    b.learn_weighted(&ex, 1.0).unwrap();
    assert_eq!(a.digest(), b.digest());
    let before = outdated(&full);
    full.learn_weighted(&ex, 1.0).unwrap();
    light.learn_weighted(&ex, 0.3).unwrap();
    let (gain_full, gain_light) = (outdated(&full) - before, outdated(&light) - before);
    assert!(
        gain_light > 0.0 && gain_light < gain_full,
        "{gain_light} vs {gain_full}"
    );
    let evaluated = |m: &Model| m.status()[0].evaluated;
    assert_eq!(evaluated(&light) + 1, evaluated(&full));
    for w in [0.0, -1.0, 1.5, f32::NAN] {
        assert!(light.learn_weighted(&ex, w).is_err(), "{w}");
    }
}
