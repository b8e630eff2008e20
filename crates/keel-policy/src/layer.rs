//! Layered bundles: `extends: default` (the embedded default pack) or `extends: <dir>` (another
//! bundle, itself possibly extending one: an organisation floor under a tenant bundle). The base's
//! files are embedded under `.base/` so a published bundle is self-contained and its version id
//! covers every layer; compiling merges the layers (base detectors, rules and tests first, then
//! the bundle's own), and an id declared in two layers is an error, so a layer can add but never
//! silently replace the protections below it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bundle::{Bundle, PolicySpec, POLICY_FILE};
use crate::error::PolicyError;
use crate::lint::LintIssue;

/// Where the files of the layer below live inside a bundle.
pub const BASE_DIR: &str = ".base/";
/// The `extends` value naming the embedded default pack.
pub const DEFAULT_BASE: &str = "default";
/// Deepest stack of layers (also stops cycles of directories).
pub const MAX_LAYERS: usize = 8;

/// Only the `extends` key of a `policy.yaml` (other keys ignored).
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    extends: Option<String>,
}

/// The `extends` value of `files`' `policy.yaml` under `prefix` (`None` when absent or when the
/// YAML does not parse: compiling reports that).
fn extends_of(files: &BTreeMap<String, String>, prefix: &str) -> Option<String> {
    let yaml = files.get(&format!("{prefix}{POLICY_FILE}"))?;
    serde_norway::from_str::<Head>(yaml).ok()?.extends
}

/// What `bundle` extends, if anything.
pub(crate) fn extends(bundle: &Bundle) -> Option<String> {
    extends_of(bundle.files(), "")
}

/// Copies `base`'s files under `.base/` into `files`.
fn embed(files: &mut BTreeMap<String, String>, base: &Bundle) {
    for (p, c) in base.files() {
        files.insert(format!("{BASE_DIR}{p}"), c.clone());
    }
}

/// `extends: default` without an embedded base: embeds the default pack. Anything else is left
/// alone (a directory base is embedded by [`Bundle::load_dir`]; compiling reports one that is
/// missing).
pub(crate) fn embed_default(files: &mut BTreeMap<String, String>) {
    let already = files.contains_key(&format!("{BASE_DIR}{POLICY_FILE}"));
    if !already && extends_of(files, "").as_deref() == Some(DEFAULT_BASE) {
        embed(files, &Bundle::from_files(&crate::default_pack_files()));
    }
}

/// Embeds the base of a bundle read from `dir`: the default pack, or the bundle in the directory
/// `extends` names (relative to `dir`), loaded with its own base.
pub(crate) fn embed_dir_base(
    dir: &std::path::Path,
    files: &mut BTreeMap<String, String>,
    depth: usize,
) -> Result<(), PolicyError> {
    let Some(ext) = extends_of(files, "") else {
        return Ok(());
    };
    if ext == DEFAULT_BASE {
        embed_default(files);
        return Ok(());
    }
    if depth + 1 >= MAX_LAYERS {
        return Err(PolicyError::Io {
            path: dir.display().to_string(),
            message: format!("`extends` goes deeper than {MAX_LAYERS} layers (a cycle?)"),
        });
    }
    let base = Bundle::load_dir_layer(dir.join(&ext), depth + 1)?;
    embed(files, &base);
    Ok(())
}

/// The single-layer bundle a layered one compiles to (`None`: the bundle does not extend
/// anything). Its `policy.yaml` is the merged spec (as JSON, which YAML reads); base lexicon
/// files keep their `.base/` paths.
pub(crate) fn flatten(bundle: &Bundle) -> Result<Option<Bundle>, PolicyError> {
    let files = bundle.files();
    if extends_of(files, "").is_none() {
        return Ok(None);
    }
    let spec = merged_spec(files, "", 0)?;
    let json = serde_json::to_string_pretty(&spec).map_err(|e| invalid(&e.to_string()))?;
    let mut flat: BTreeMap<String, String> = files
        .iter()
        .filter(|(p, _)| !(p.starts_with(BASE_DIR) && p.ends_with(POLICY_FILE)))
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect();
    flat.insert(POLICY_FILE.to_string(), json);
    Ok(Some(Bundle::from_files(
        &flat.into_iter().collect::<Vec<_>>(),
    )))
}

fn invalid(msg: &str) -> PolicyError {
    PolicyError::Invalid(vec![LintIssue::error(
        POLICY_FILE,
        1,
        None,
        "extends",
        msg.to_string(),
    )])
}

/// The spec of the layer under `prefix` merged over its bases.
fn merged_spec(
    files: &BTreeMap<String, String>,
    prefix: &str,
    depth: usize,
) -> Result<PolicySpec, PolicyError> {
    let path = format!("{prefix}{POLICY_FILE}");
    let Some(yaml) = files.get(&path) else {
        return Err(invalid(&format!(
            "`{path}` is missing: the base was not embedded (load the bundle from its directory, or use `extends: default`)"
        )));
    };
    let mut spec: PolicySpec = serde_norway::from_str(yaml).map_err(|e| {
        PolicyError::Invalid(vec![LintIssue::error(
            &path,
            e.location().map_or(1, |l| l.line()),
            None,
            "yaml",
            e.to_string(),
        )])
    })?;
    for d in &mut spec.detectors {
        for f in &mut d.files {
            *f = format!("{prefix}{f}");
        }
    }
    let Some(ext) = spec.extends.take() else {
        return Ok(spec);
    };
    if depth + 1 >= MAX_LAYERS {
        return Err(invalid(&format!(
            "`extends` goes deeper than {MAX_LAYERS} layers"
        )));
    }
    let base = merged_spec(files, &format!("{prefix}{BASE_DIR}"), depth + 1)?;
    let mut clash = Vec::new();
    for d in &spec.detectors {
        if base.detectors.iter().any(|b| b.id == d.id) {
            clash.push(format!("detector `{}`", d.id));
        }
    }
    for r in &spec.rules {
        if base.rules.iter().any(|b| b.id == r.id) {
            clash.push(format!("rule `{}`", r.id));
        }
    }
    for t in &spec.tests {
        if base.tests.iter().any(|b| b.name == t.name) {
            clash.push(format!("test `{}`", t.name));
        }
    }
    if !clash.is_empty() {
        return Err(invalid(&format!(
            "{} already defined by the base `{}` (`extends: {ext}`): a layer adds rules, it cannot replace the base's; pick other ids",
            clash.join(", "),
            base.name
        )));
    }
    let mut detectors = base.detectors;
    detectors.append(&mut spec.detectors);
    let mut rules = base.rules;
    rules.append(&mut spec.rules);
    let mut tests = base.tests;
    tests.append(&mut spec.tests);
    Ok(PolicySpec {
        detectors,
        rules,
        tests,
        extends: None,
        ..spec
    })
}

/// Moves the lines of issues found in a flattened bundle back to the bundle's own
/// `policy.yaml` (by rule, detector or test id; the base's ids point at `.base/policy.yaml`).
pub(crate) fn relocate(bundle: &Bundle, issues: Vec<LintIssue>) -> Vec<LintIssue> {
    let own = bundle.get(POLICY_FILE).unwrap_or("");
    issues
        .into_iter()
        .map(|mut i| {
            if i.file == POLICY_FILE {
                let id = i.rule_id.clone().unwrap_or_default();
                let found = !id.is_empty()
                    && (own.contains(&format!("id: {id}")) || own.contains(&format!("name: {id}")));
                if found || id.is_empty() {
                    i.line = crate::bundle::line_of_id(own, &id, 1);
                } else {
                    i.file = format!("{BASE_DIR}{POLICY_FILE}");
                    i.line = 1;
                }
            }
            i
        })
        .collect()
}
