//! Where a StoragePlugin version with an `oci` source is fetched. Every OCI
//! load goes through [`load_oci`], so wiring the OCI client (`plugin::oci`,
//! `pull(reference, credentials, max_bytes) -> Artifact`) is one change
//! here. Until that client is part of the build, an OCI version fails to
//! load with a clear error and the serving version stays in place.

use crate::api::OciSource;

/// Default size limit of an OCI component.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// A component fetched from a registry.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component bytes.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` the registry's manifest named for them, verified.
    pub digest: String,
}

/// Why an OCI version did not load.
#[derive(Debug, thiserror::Error)]
pub enum OciLoadError {
    #[error(
        "oci/{reference}: OCI sources are not available in this build; ship the component in a ConfigMap (source.configMap) instead"
    )]
    Unavailable { reference: String },
}

/// Fetch the component `source` names, with credentials from its pull
/// Secret (read by the caller, `docker_config`: the Secret's
/// `.dockerconfigjson`), at most `source.maxBytes` (default
/// [`DEFAULT_MAX_BYTES`]).
///
/// # Errors
/// [`OciLoadError`]; today always `Unavailable`.
pub async fn load_oci(
    source: &OciSource,
    docker_config: Option<&[u8]>,
) -> Result<Fetched, OciLoadError> {
    let _ = (docker_config, source.max_bytes.unwrap_or(DEFAULT_MAX_BYTES));
    Err(OciLoadError::Unavailable {
        reference: source.reference.clone(),
    })
}
