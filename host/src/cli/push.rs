//! `atoll plugins push FILE REFERENCE`: check that a component loads as a
//! plugin, then push it to an OCI registry as the CNCF wasm artifact layout
//! (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::SandboxArgs;
use crate::plugin::oci::{self, Credentials, InsecurePolicy, Reference};

#[derive(Args)]
pub struct PushArgs {
    /// The plugin component (.wasm).
    pub file: PathBuf,
    /// Where to push it: `registry/repository:tag` (e.g. ghcr.io/me/raft:1.2.0).
    pub reference: String,
    /// Registry user; the password is read from ATOLL_REGISTRY_PASSWORD.
    #[arg(long)]
    pub username: Option<String>,
    #[arg(
        long,
        env = "ATOLL_REGISTRY_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    pub password: Option<String>,
    /// A Docker config (`~/.docker/config.json`, or a pull Secret's
    /// `.dockerconfigjson`) whose `auths` entry for the registry holds the
    /// credentials. Credential helpers (`credsStore`) are not consulted.
    #[arg(long, value_name = "FILE", conflicts_with = "username")]
    pub docker_config: Option<PathBuf>,
    /// Speak plain HTTP to this registry (`host[:port]`; repeatable).
    /// Loopback registries always get plain HTTP.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `atoll plugins push`: prints the pinned reference and digests as JSON.
///
/// # Errors
/// The file cannot be read or is not a plugin atoll loads, the reference or
/// credentials are invalid, or the registry refuses the push.
pub fn push(args: PushArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // Refuse what atoll would refuse to load, before it reaches a registry.
    let plugin = args
        .sandbox
        .runtime()?
        .load(&args.file.display().to_string(), &bytes)?;
    let reference = Reference::parse(&args.reference)?;
    let credentials = credentials(&args, &reference)?;
    let insecure = InsecurePolicy {
        hosts: args.insecure_registry.clone(),
        ..InsecurePolicy::default()
    };
    let pushed = tokio::runtime::Runtime::new()?.block_on(oci::push(
        &reference,
        credentials.as_ref(),
        &bytes,
        &insecure,
    ))?;
    let metadata = plugin.metadata();
    let info = serde_json::json!({
        "reference": pushed.pinned.to_string(),
        "manifestDigest": pushed.manifest_digest.to_string(),
        "digest": pushed.layer_digest.to_string(),
        "size": bytes.len(),
        "name": metadata.name,
        "version": metadata.version,
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

fn credentials(args: &PushArgs, reference: &Reference) -> Result<Option<Credentials>> {
    if let Some(user) = &args.username {
        let password = args
            .password
            .clone()
            .context("--username needs the password in ATOLL_REGISTRY_PASSWORD")?;
        return Ok(Some(Credentials::Basic {
            user: user.clone(),
            password,
        }));
    }
    let Some(path) = &args.docker_config else {
        return Ok(None);
    };
    let json = read(path)?;
    let found = Credentials::from_docker_config_json(&json, reference.registry())?;
    anyhow::ensure!(
        found.is_some(),
        "{} has no `auths` entry for {}",
        path.display(),
        reference.registry()
    );
    Ok(found)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
