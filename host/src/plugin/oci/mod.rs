//! Plugins from OCI registries: pull a wasm artifact by tag or digest,
//! verify it, and load it through the same [`Runtime::load`] (validation and
//! compiled-component cache) as ConfigMap plugins.
//!
//! - **Layouts.** A manifest (OCI or Docker v2) with exactly one layer of a
//!   wasm media type ([`WASM_LAYER_TYPES`]: `application/wasm`, as the CNCF
//!   wasm artifact layout with config `application/vnd.wasm.config.v0+json`
//!   and Kubewarden write it, and wasm-to-oci's older types), whatever its
//!   config; or an index whose entry for `wasm`/`wasi*` (or only entry) is one.
//! - **Verification.** A reference pinned by digest is fetched by digest and
//!   the manifest's sha256 must equal it; `tag@digest` whose digest the
//!   registry does not have is checked against the tag, so a tag that moved
//!   reports [`OciError::DigestMismatch`] rather than "not found". The wasm
//!   layer's bytes must match its descriptor's size and sha256.
//! - **Size.** The wasm layer may be at most `max_bytes`: a larger descriptor
//!   is refused before downloading, and the download stops (holding at most
//!   `max_bytes`) as soon as the registry sends more than the descriptor said.
//!   Manifests are limited to 4 MiB.
//! - **Transport.** HTTPS (rustls, the system's roots) by default; plain HTTP
//!   only to registries [`InsecurePolicy`] allows: loopback addresses by
//!   default, plus listed hosts. Redirects are followed for downloads (blobs
//!   often live in object storage), without the credentials.
//! - **Credentials.** Basic credentials (from a `kubernetes.io/dockerconfigjson`
//!   pull Secret, [`Credentials::from_docker_config_json`]) are sent as basic
//!   auth when the registry's 401 asks for it, or exchanged for a bearer token
//!   at the realm a `WWW-Authenticate: Bearer` challenge names (anonymously
//!   without credentials, which serves public repositories on Docker Hub,
//!   GHCR and the like).
//!
//! [`push`] writes the CNCF wasm artifact layout, for `atoll plugin push` and tests.

mod auth;
mod manifest;
mod push;
mod reference;
#[cfg(test)]
mod tests;
mod transport;

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};
use hyper::body::Bytes;

pub use auth::{Credentials, DOCKER_CONFIG_JSON_KEY};
pub use manifest::{WASM_CONFIG, WASM_LAYER, WASM_LAYER_TYPES};
pub use push::{Pushed, push, push_blob, push_manifest};
pub use reference::Reference;

use crate::contract::Digest;
use crate::error::PluginError;
use crate::plugin::{LoadedPlugin, Runtime};
use manifest::Parsed;
use transport::{Session, read_error_body, read_limited};

/// A default for `max_bytes`: the decompressed limit of ConfigMap plugins (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = super::configmap::MAX_COMPONENT_BYTES;

/// Pulling a plugin from a registry failed. Each variant has a
/// [`reason`](OciError::reason) for status conditions and Events.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("OCI reference `{reference}`: the {part} is invalid: {reason}")]
    InvalidReference {
        reference: String,
        part: &'static str,
        reason: String,
    },

    #[error("the pull Secret is unusable: {reason}")]
    InvalidPullSecret { reason: String },

    #[error("{reference}: the registry has no {what}")]
    NotFound { reference: String, what: String },

    #[error("registry {registry} refused access: {reason}")]
    Unauthorized { registry: String, reason: String },

    #[error("registry {registry} is unavailable: {reason}")]
    RegistryUnavailable { registry: String, reason: String },

    #[error("registry {registry} answered unexpectedly: {reason}")]
    RegistryError { registry: String, reason: String },

    #[error("{what}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("the wasm layer is {} bytes, over the limit of {limit} bytes", size.map_or("more than the limit".to_string(), |s| s.to_string()))]
    TooLarge { limit: u64, size: Option<u64> },

    #[error("not a wasm artifact: {reason}")]
    NotWasm { reason: String },

    #[error("malformed manifest: {reason}")]
    BadManifest { reason: String },
}

impl OciError {
    /// A CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::InvalidReference { .. } => "InvalidReference",
            OciError::InvalidPullSecret { .. } => "InvalidPullSecret",
            OciError::NotFound { .. } => "ArtifactNotFound",
            OciError::Unauthorized { .. } => "RegistryUnauthorized",
            OciError::RegistryUnavailable { .. } => "RegistryUnavailable",
            OciError::RegistryError { .. } => "RegistryError",
            OciError::DigestMismatch { .. } => "DigestMismatch",
            OciError::TooLarge { .. } => "ArtifactTooLarge",
            OciError::NotWasm { .. } => "NotWasm",
            OciError::BadManifest { .. } => "BadManifest",
        }
    }

    /// Whether retrying later may succeed without anyone changing anything
    /// (the registry was down, overloaded or answered 5xx); the others need a
    /// fix of the reference, the Secret or the registry's contents.
    pub fn is_transient(&self) -> bool {
        matches!(self, OciError::RegistryUnavailable { .. })
    }
}

/// Which registries are spoken to over plain HTTP. Everything else is HTTPS.
#[derive(Debug, Clone)]
pub struct InsecurePolicy {
    /// Loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`, any port):
    /// traffic that never leaves the host (or the Pod) gains nothing from TLS,
    /// and test registries run there. On by default.
    pub loopback: bool,
    /// `host[:port]` of further plain-HTTP registries (a host without a port
    /// matches every port).
    pub hosts: Vec<String>,
}

impl Default for InsecurePolicy {
    fn default() -> Self {
        Self {
            loopback: true,
            hosts: Vec::new(),
        }
    }
}

impl InsecurePolicy {
    /// HTTPS everywhere, loopback included.
    pub fn strict() -> Self {
        Self {
            loopback: false,
            hosts: Vec::new(),
        }
    }

    /// Whether `host_port` (`host[:port]`) may be spoken to over plain HTTP.
    pub fn allows_http(&self, host_port: &str) -> bool {
        let host = match host_port.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => host,
            _ => host_port,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (self.loopback && loopback)
            || self
                .hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host_port) || h.eq_ignore_ascii_case(host))
    }
}

/// A verified wasm artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The wasm layer's bytes.
    pub bytes: Vec<u8>,
    /// sha256 of `bytes` (equal to the layer descriptor's digest, and to the
    /// digest a loaded plugin reports).
    pub digest: Digest,
    /// sha256 of the manifest the layer came from (of the image manifest when
    /// the reference resolved through an index).
    pub manifest_digest: Digest,
    /// The reference pulled, pinned to `manifest_digest`.
    pub pinned: Reference,
}

/// Pulls the wasm artifact `reference` names. See the [module docs](self)
/// for layouts, verification, limits, transport and credentials.
///
/// # Errors
/// An [`OciError`]; [`OciError::reason`] names the condition.
pub async fn pull(
    reference: &Reference,
    credentials: Option<&Credentials>,
    max_bytes: u64,
    insecure: &InsecurePolicy,
) -> Result<Artifact, OciError> {
    let mut session = Session::new(reference, credentials, insecure, "pull")?;
    let (mut manifest_digest, mut parsed) = resolve(&mut session, reference).await?;
    if let Parsed::Index(digest) = parsed {
        let entry = digest.to_string();
        (manifest_digest, parsed) =
            fetch_manifest(&mut session, reference, &entry, Some(digest)).await?;
    }
    let Parsed::Wasm { layer, digest } = parsed else {
        return Err(OciError::BadManifest {
            reason: "an index whose wasm entry is another index".into(),
        });
    };
    if layer.size > max_bytes {
        return Err(OciError::TooLarge {
            limit: max_bytes,
            size: Some(layer.size),
        });
    }
    let url = session.url(&format!("blobs/{digest}"));
    let response = session.send(Method::GET, &url, &[], Bytes::new()).await?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Err(OciError::NotFound {
            reference: reference.to_string(),
            what: format!("wasm layer {digest}"),
        });
    }
    if !status.is_success() {
        return Err(status_error(
            &session,
            status,
            &url,
            read_error_body(response).await,
        ));
    }
    let bytes = read_limited(response.into_body(), layer.size)
        .await
        .map_err(|e| session.unavailable(e))?
        .ok_or_else(|| OciError::DigestMismatch {
            what: format!("wasm layer of {reference}"),
            expected: format!("{digest} ({} bytes)", layer.size),
            actual: format!("more than {} bytes", layer.size),
        })?;
    let actual = Digest::of(&bytes);
    if actual != digest || bytes.len() as u64 != layer.size {
        return Err(OciError::DigestMismatch {
            what: format!("wasm layer of {reference}"),
            expected: format!("{digest} ({} bytes)", layer.size),
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(OciError::NotWasm {
            reason: format!(
                "layer {digest} ({}) does not start with the wasm magic bytes",
                layer.media_type
            ),
        });
    }
    Ok(Artifact {
        bytes,
        digest: actual,
        manifest_digest,
        pinned: reference.pinned(manifest_digest),
    })
}

/// Loads a pulled artifact through [`Runtime::load`] (on a blocking thread:
/// compiling takes a while), exactly as ConfigMap plugins are, so the same
/// validation and compiled-component cache apply. The plugin's origin in
/// errors is `oci <pinned reference>`.
///
/// # Errors
/// As [`Runtime::load`].
pub async fn load(
    runtime: &Arc<Runtime>,
    artifact: &Artifact,
) -> Result<LoadedPlugin, PluginError> {
    let origin = format!("oci {}", artifact.pinned);
    let runtime = Arc::clone(runtime);
    let bytes = artifact.bytes.clone();
    let origin_for_task = origin.clone();
    tokio::task::spawn_blocking(move || runtime.load_tiered(&origin_for_task, &bytes))
        .await
        .map_err(|e| PluginError::Read {
            origin,
            reason: format!("the loading task failed: {e}"),
        })?
}

/// The manifest `reference` names: by digest when pinned (falling back to
/// the tag only to explain a miss), else by tag.
async fn resolve(
    session: &mut Session<'_>,
    reference: &Reference,
) -> Result<(Digest, Parsed), OciError> {
    let Some(pin) = reference.digest() else {
        let tag = reference.tag().unwrap_or("latest").to_owned();
        return fetch_manifest(session, reference, &tag, None).await;
    };
    match fetch_manifest(session, reference, &pin.to_string(), Some(pin)).await {
        Err(OciError::NotFound { .. }) if reference.tag().is_some() => {
            let tag = reference.tag().unwrap_or_default().to_owned();
            let (actual, parsed) = fetch_manifest(session, reference, &tag, None).await?;
            if actual != pin {
                return Err(OciError::DigestMismatch {
                    what: format!(
                        "manifest of {}/{}:{tag} (the pinned digest is not in the repository)",
                        reference.registry(),
                        reference.repository()
                    ),
                    expected: pin.to_string(),
                    actual: actual.to_string(),
                });
            }
            Ok((actual, parsed))
        }
        other => other,
    }
}

/// `GET manifests/<tag or digest>`, verified against `expected` and the
/// registry's own `Docker-Content-Digest`.
async fn fetch_manifest(
    session: &mut Session<'_>,
    reference: &Reference,
    tag_or_digest: &str,
    expected: Option<Digest>,
) -> Result<(Digest, Parsed), OciError> {
    let url = session.url(&format!("manifests/{tag_or_digest}"));
    let response = session
        .send(
            Method::GET,
            &url,
            &[("accept", manifest::ACCEPT)],
            Bytes::new(),
        )
        .await?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Err(OciError::NotFound {
            reference: reference.to_string(),
            what: format!("manifest {tag_or_digest}"),
        });
    }
    if !status.is_success() {
        return Err(status_error(
            session,
            status,
            &url,
            read_error_body(response).await,
        ));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let claimed = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| reference::parse_digest(v).ok());
    let body = read_limited(response.into_body(), manifest::MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| session.unavailable(e))?
        .ok_or_else(|| OciError::BadManifest {
            reason: format!("manifest {tag_or_digest} is over 4 MiB"),
        })?;
    let actual = Digest::of(&body);
    for (what, expected) in [("pinned", expected), ("Docker-Content-Digest", claimed)] {
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(OciError::DigestMismatch {
                what: format!("manifest {tag_or_digest} of {reference} ({what} digest)"),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    Ok((actual, manifest::parse(&body, content_type.as_deref())?))
}

/// An unexpected status: 429 and 5xx mean the registry is unavailable for
/// now; anything else is a registry error.
fn status_error(session: &Session<'_>, status: StatusCode, url: &str, detail: String) -> OciError {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        session.unavailable(format!("{status} for {url}{detail}"))
    } else {
        OciError::RegistryError {
            registry: session.registry().to_owned(),
            reason: format!("{status} for {url}{detail}"),
        }
    }
}
