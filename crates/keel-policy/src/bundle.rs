//! Bundles: the files of a policy (`policy.yaml` plus data files such as lexicon term lists),
//! their YAML schema, loading from a directory or from memory, and the version id (hex SHA-256
//! of the canonical serialisation of all files).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::PolicyError;
use crate::input::Phase;

/// The main file of every bundle.
pub const POLICY_FILE: &str = "policy.yaml";
/// Largest file a bundle may contain (bytes).
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Most files a bundle may contain.
pub const MAX_FILES: usize = 256;

/// The files of a bundle, by `/`-separated path relative to the bundle's root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bundle {
    files: BTreeMap<String, String>,
}

impl Bundle {
    /// A bundle from in-memory files (e.g. `include_str!`-embedded ones).
    /// `extends: default` embeds the default pack under `.base/` (see [`crate::layer`]).
    pub fn from_files<P: AsRef<str>, C: AsRef<str>>(files: &[(P, C)]) -> Self {
        let mut files = files
            .iter()
            .map(|(p, c)| (normalize_path(p.as_ref()), c.as_ref().to_string()))
            .collect();
        crate::layer::embed_default(&mut files);
        Bundle { files }
    }

    /// Reads every non-hidden file under `dir` (recursively), and the base it `extends` (the
    /// default pack, or a directory relative to `dir`) under `.base/`. The only IO of this crate.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, PolicyError> {
        Bundle::load_dir_layer(dir.as_ref(), 0)
    }

    pub(crate) fn load_dir_layer(dir: impl AsRef<Path>, depth: usize) -> Result<Self, PolicyError> {
        let dir = dir.as_ref();
        let mut files = BTreeMap::new();
        read_dir_into(dir, dir, &mut files)?;
        if !files.contains_key(POLICY_FILE) {
            return Err(PolicyError::Io {
                path: dir.join(POLICY_FILE).display().to_string(),
                message: "not found".to_string(),
            });
        }
        crate::layer::embed_dir_base(dir, &mut files, depth)?;
        Ok(Bundle { files })
    }

    /// What this bundle extends (`default` or a directory), if anything.
    pub fn extends(&self) -> Option<String> {
        crate::layer::extends(self)
    }

    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(&normalize_path(path)).map(String::as_str)
    }

    /// The version id: hex SHA-256 over `keel-policy-bundle/v1\n` then, for every file sorted by
    /// path, the path's and the content's byte lengths (u64 big-endian) each followed by the
    /// bytes. Line endings are normalised to `\n` first, so a checkout's CRLFs do not change it.
    pub fn version_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"keel-policy-bundle/v1\n");
        for (path, content) in &self.files {
            let content = content.replace("\r\n", "\n");
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((content.len() as u64).to_be_bytes());
            h.update(content.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

fn normalize_path(p: &str) -> String {
    let p = p.replace('\\', "/");
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

fn read_dir_into(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), PolicyError> {
    let io = |path: &Path, e: std::io::Error| PolicyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            read_dir_into(root, &path, out)?;
            continue;
        }
        if out.len() >= MAX_FILES {
            return Err(PolicyError::Io {
                path: root.display().to_string(),
                message: format!("more than {MAX_FILES} files"),
            });
        }
        let meta = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
        if meta.len() > MAX_FILE_BYTES as u64 {
            return Err(PolicyError::Io {
                path: path.display().to_string(),
                message: format!("larger than {MAX_FILE_BYTES} bytes"),
            });
        }
        let content = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .to_string();
        out.insert(normalize_path(&rel), content);
    }
    Ok(())
}

/// `policy.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The accountable person or team (required).
    pub owner: String,
    /// The layer below: `default` (the embedded default pack) or a bundle directory relative to
    /// this one. Its detectors, rules and tests come first and cannot be redefined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    #[serde(default)]
    pub detectors: Vec<DetectorSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

/// A detector: `kind` is `regex` (`patterns`), `lexicon` (`terms` and/or `files`), `pii`
/// (`recognizers`, default all) or `facts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<PatternSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recognizers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    pub name: String,
    pub pattern: String,
}

/// How bad a rule's finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// `S1`…`S14` (Llama Guard 3 hazard categories) or a custom name.
    pub category: String,
    #[serde(default)]
    pub severity: Severity,
    pub phase: Phase,
    #[serde(default)]
    pub scope: ScopeSpec,
    /// A CEL expression; absent means `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(deserialize_with = "de_action")]
    pub action: ActionSpec,
}

/// Reads `action: allow` or `action: {block: {message: …}}` (serde_norway wants YAML tags for
/// enums; the single-key-map form reads better, so it goes through a JSON value).
fn de_action<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ActionSpec, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

/// Where and when a rule applies; empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// BCP 47 tags; `ja` matches `ja-JP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locales: Vec<String>,
    /// Codes such as `JP`, `US`, `US-CA`; `US` matches `US-CA`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jurisdictions: Vec<String>,
    /// RFC 3339; the rule applies from this instant (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    /// RFC 3339; the rule stops applying at this instant (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_until: Option<String>,
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    Allow,
    Block {
        message: String,
    },
    Redact {
        /// Detector ids, or `<pii detector>.<kind>` (e.g. `pii.email`).
        detectors: Vec<String>,
        /// `{label}` is replaced by the finding's label (the PII kind, the term, the pattern).
        #[serde(default = "default_replacement")]
        replacement: String,
    },
    Rewrite {
        /// A regex (bounded length, so streams can hold back enough).
        from: String,
        /// The replacement; `$1`, `${name}` refer to groups.
        to: String,
    },
    Append {
        notice: String,
    },
    Escalate {
        message: String,
        #[serde(default)]
        severity: Severity,
    },
    Route {
        upstream: String,
    },
    /// Replaces each stale fact value with the value in force (`correct: {}` = every facts
    /// detector).
    Correct {
        #[serde(default)]
        detectors: Vec<String>,
    },
}

fn default_replacement() -> String {
    "[REDACTED]".to_string()
}

/// An inline test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub name: String,
    /// Defaults to `output` when `response` is given, else `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// OpenAI `messages` (string or content-part contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<serde_json::Value>,
    /// The reply: one string, or one per choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<TestContext>,
    /// Fact versions the case is checked against (instead of the runtime registry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<crate::facts::Fact>,
    pub expect: TestExpect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A test case's context; `now` defaults to [`TEST_NOW`](crate::testing::TEST_NOW), the tenant
/// to `test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TestContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What a test case expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestExpect {
    /// The decision's action (its summary).
    pub action: crate::decision::ActionKind,
    /// Exactly the rules that fire, in rule order (if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// Substrings the transformed text of every segment must contain / must not contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_contains: Vec<String>,
    /// The exact transformed text of the first segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The 1-based line of the first line in `yaml` declaring `id: <id>` (as `- id:` or `id:`),
/// searching from `after` (a line number); 1 if not found.
pub(crate) fn line_of_id(yaml: &str, id: &str, after: usize) -> usize {
    for (i, line) in yaml.lines().enumerate() {
        if i + 1 < after {
            continue;
        }
        let t = line
            .trim_start()
            .trim_start_matches("- ")
            .trim_start()
            .trim_start_matches('{')
            .trim_start();
        if let Some(rest) = t.strip_prefix("id:").or_else(|| t.strip_prefix("name:")) {
            let v = rest
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .trim_matches('\'');
            if v == id {
                return i + 1;
            }
        }
    }
    after.max(1)
}

/// The 1-based line where a top-level section (`rules:`, `detectors:`, `tests:`) starts.
pub(crate) fn line_of_section(yaml: &str, section: &str) -> usize {
    let key = format!("{section}:");
    yaml.lines()
        .position(|l| l.starts_with(&key))
        .map_or(1, |i| i + 1)
}
