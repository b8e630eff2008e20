//! Differences between two policy versions: metadata, rules and detectors added, removed or
//! changed (field by field), with a human-readable rendering for `keel policy diff`.

use serde::{Deserialize, Serialize};

use crate::bundle::{DetectorSpec, RuleSpec};
use crate::Policy;

/// A rule or detector present in both versions whose definition changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub id: String,
    /// The fields that differ (`when`, `action`, `scope`, `terms`, …).
    pub fields: Vec<String>,
}

/// The result of [`diff`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDiff {
    pub from_version: String,
    pub to_version: String,
    /// `name`, `description`, `owner` when they differ.
    pub metadata_changed: Vec<String>,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub rules_changed: Vec<Changed>,
    /// Whether the rule order changed (it decides ties).
    pub rules_reordered: bool,
    pub detectors_added: Vec<String>,
    pub detectors_removed: Vec<String>,
    pub detectors_changed: Vec<Changed>,
    pub tests_added: usize,
    pub tests_removed: usize,
}

impl BundleDiff {
    pub fn is_empty(&self) -> bool {
        self.from_version == self.to_version
    }
}

fn rule_fields(a: &RuleSpec, b: &RuleSpec) -> Vec<String> {
    let mut f = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            f.push(name.to_string());
        }
    };
    check("description", a.description == b.description);
    check("category", a.category == b.category);
    check("severity", a.severity == b.severity);
    check("phase", a.phase == b.phase);
    check("scope", a.scope == b.scope);
    check("when", a.when == b.when);
    check("action", a.action == b.action);
    f
}

fn detector_fields(
    a: &DetectorSpec,
    b: &DetectorSpec,
    ta: Option<&Vec<String>>,
    tb: Option<&Vec<String>>,
) -> Vec<String> {
    let mut f = Vec::new();
    if a.kind != b.kind {
        f.push("kind".to_string());
    }
    if a.description != b.description {
        f.push("description".to_string());
    }
    if a.patterns != b.patterns {
        f.push("patterns".to_string());
    }
    if a.recognizers != b.recognizers {
        f.push("recognizers".to_string());
    }
    if ta != tb {
        let (ta, tb) = (
            ta.cloned().unwrap_or_default(),
            tb.cloned().unwrap_or_default(),
        );
        let added = tb.iter().filter(|t| !ta.contains(t)).count();
        let removed = ta.iter().filter(|t| !tb.contains(t)).count();
        f.push(format!("terms (+{added} -{removed})"));
    } else if a.files != b.files {
        f.push("files".to_string());
    }
    f
}

/// What changed from `a` to `b`.
pub fn diff(a: &Policy, b: &Policy) -> BundleDiff {
    let (sa, sb) = (a.spec(), b.spec());
    let mut metadata_changed = Vec::new();
    if sa.name != sb.name {
        metadata_changed.push("name".to_string());
    }
    if sa.description != sb.description {
        metadata_changed.push("description".to_string());
    }
    if sa.owner != sb.owner {
        metadata_changed.push("owner".to_string());
    }
    let find_rule = |rules: &[RuleSpec], id: &str| rules.iter().position(|r| r.id == id);
    let rules_added = sb
        .rules
        .iter()
        .filter(|r| find_rule(&sa.rules, &r.id).is_none())
        .map(|r| r.id.clone())
        .collect();
    let rules_removed = sa
        .rules
        .iter()
        .filter(|r| find_rule(&sb.rules, &r.id).is_none())
        .map(|r| r.id.clone())
        .collect();
    let mut rules_changed = Vec::new();
    let mut common_a = Vec::new();
    let mut common_b = Vec::new();
    for ra in &sa.rules {
        if let Some(j) = find_rule(&sb.rules, &ra.id) {
            common_a.push(ra.id.clone());
            if let Some(rb) = sb.rules.get(j) {
                let fields = rule_fields(ra, rb);
                if !fields.is_empty() {
                    rules_changed.push(Changed {
                        id: ra.id.clone(),
                        fields,
                    });
                }
            }
        }
    }
    for rb in &sb.rules {
        if find_rule(&sa.rules, &rb.id).is_some() {
            common_b.push(rb.id.clone());
        }
    }
    let find_det = |ds: &[DetectorSpec], id: &str| ds.iter().find(|d| d.id == id).cloned();
    let detectors_added = sb
        .detectors
        .iter()
        .filter(|d| find_det(&sa.detectors, &d.id).is_none())
        .map(|d| d.id.clone())
        .collect();
    let detectors_removed = sa
        .detectors
        .iter()
        .filter(|d| find_det(&sb.detectors, &d.id).is_none())
        .map(|d| d.id.clone())
        .collect();
    let mut detectors_changed = Vec::new();
    for da in &sa.detectors {
        if let Some(db) = find_det(&sb.detectors, &da.id) {
            let fields = detector_fields(
                da,
                &db,
                a.lexicon_terms().get(&da.id),
                b.lexicon_terms().get(&da.id),
            );
            if !fields.is_empty() {
                detectors_changed.push(Changed {
                    id: da.id.clone(),
                    fields,
                });
            }
        }
    }
    let tests_added = sb
        .tests
        .iter()
        .filter(|t| !sa.tests.iter().any(|x| x.name == t.name))
        .count();
    let tests_removed = sa
        .tests
        .iter()
        .filter(|t| !sb.tests.iter().any(|x| x.name == t.name))
        .count();
    BundleDiff {
        from_version: a.version().to_string(),
        to_version: b.version().to_string(),
        metadata_changed,
        rules_added,
        rules_removed,
        rules_changed,
        rules_reordered: common_a != common_b,
        detectors_added,
        detectors_removed,
        detectors_changed,
        tests_added,
        tests_removed,
    }
}

impl std::fmt::Display for BundleDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |v: &str| v.chars().take(12).collect::<String>();
        writeln!(
            f,
            "policy {} -> {}",
            short(&self.from_version),
            short(&self.to_version)
        )?;
        if self.is_empty() {
            return write!(f, "no changes");
        }
        if !self.metadata_changed.is_empty() {
            writeln!(f, "~ metadata: {}", self.metadata_changed.join(", "))?;
        }
        for id in &self.rules_added {
            writeln!(f, "+ rule {id}")?;
        }
        for id in &self.rules_removed {
            writeln!(f, "- rule {id}")?;
        }
        for c in &self.rules_changed {
            writeln!(f, "~ rule {}: {}", c.id, c.fields.join(", "))?;
        }
        if self.rules_reordered {
            writeln!(
                f,
                "~ rule order changed (ties between equal actions follow rule order)"
            )?;
        }
        for id in &self.detectors_added {
            writeln!(f, "+ detector {id}")?;
        }
        for id in &self.detectors_removed {
            writeln!(f, "- detector {id}")?;
        }
        for c in &self.detectors_changed {
            writeln!(f, "~ detector {}: {}", c.id, c.fields.join(", "))?;
        }
        write!(f, "tests: +{} -{}", self.tests_added, self.tests_removed)
    }
}
