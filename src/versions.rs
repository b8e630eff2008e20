//! Naming a policy on the command line: a bundle directory, or a published version by full id or
//! unambiguous prefix (the one resolver, `keel_gateway::update::resolve_version`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use keel_gateway::server::open_store;
use keel_policy::Policy;

/// The policy in directory `arg`, else the published version `arg` names (needs `config`).
pub(crate) async fn dir_or_version(arg: &Path, config: Option<&Path>) -> Result<Policy> {
    if arg.is_dir() {
        return Ok(crate::policy::load_policy(&PathBuf::from(arg))?.1);
    }
    let Some(config) = config else {
        bail!(
            "{}: not a bundle directory (to name a published version, pass --config)",
            arg.display()
        );
    };
    let config = keel_gateway::Config::load(config)?;
    let store = open_store(&config).await?;
    let result = async {
        let query = arg.to_string_lossy();
        let version = keel_gateway::update::resolve_version(store.as_ref(), &query).await?;
        let payload = store
            .policy_bundle(&version)
            .await?
            .with_context(|| format!("version {version} has no stored bundle"))?;
        let bundle = keel_loop::update::bundle_from_payload(&payload)?;
        Ok::<_, anyhow::Error>(Policy::compile(&bundle)?)
    }
    .await;
    store.close().await;
    result
}
