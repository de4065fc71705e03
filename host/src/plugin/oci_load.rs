//! Where a StoragePlugin version with an `oci` source is fetched: the
//! reference parsed, credentials taken from the pull Secret's
//! `.dockerconfigjson`, and the artifact pulled and verified by
//! [`oci::pull`] (digests, media types, size limit).
//! Plain HTTP is used for loopback registries only
//! ([`InsecurePolicy::default`]).

use super::oci::{self, Credentials, InsecurePolicy, OciError, Reference};
use crate::api::OciSource;

/// Default size limit of an OCI component: the same as a ConfigMap's
/// decoded component, large enough for Python and TypeScript plugins
/// (~18 MB and ~13 MB).
pub const DEFAULT_MAX_BYTES: u64 = oci::DEFAULT_MAX_BYTES;

/// A component fetched from a registry.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component bytes.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of the bytes, verified against the manifest's layer.
    pub digest: String,
    /// Whether the reference names a digest (immutable: never pulled again).
    pub pinned: bool,
}

/// Fetch the component `source` names, with credentials from its pull
/// Secret (read by the caller, `docker_config`: the Secret's
/// `.dockerconfigjson`), at most `source.maxBytes` (default
/// [`DEFAULT_MAX_BYTES`]).
///
/// # Errors
/// An [`OciError`]; its [`reason`](OciError::reason) names the condition
/// (`ArtifactNotFound`, `DigestMismatch`, `RegistryUnavailable`, ...).
pub async fn load_oci(
    source: &OciSource,
    docker_config: Option<&[u8]>,
) -> Result<Fetched, OciError> {
    let reference = Reference::parse(&source.reference)?;
    let credentials = match docker_config {
        Some(json) => Credentials::from_docker_config_json(json, reference.registry())?,
        None => None,
    };
    let max_bytes = source.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let artifact = oci::pull(
        &reference,
        credentials.as_ref(),
        max_bytes,
        &InsecurePolicy::default(),
    )
    .await?;
    Ok(Fetched {
        bytes: artifact.bytes,
        digest: artifact.digest.to_string(),
        pinned: reference.digest().is_some(),
    })
}
