//! Manifests and the wasm artifact layouts atoll accepts.

use serde::{Deserialize, Serialize};

use super::OciError;
use super::reference::parse_digest;
use crate::contract::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header of manifest requests: single manifests and indexes,
/// OCI and Docker's.
pub(super) const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The config media type of the CNCF wasm OCI artifact layout (what
/// [`push`](super::push) writes).
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of the CNCF wasm OCI artifact layout and of Kubewarden.
pub const WASM_LAYER: &str = "application/wasm";

/// Layer media types that hold a plain wasm module or component:
/// `application/wasm` (the CNCF wasm artifact layout, Kubewarden, `oras
/// push file.wasm:application/wasm`) and the two of wasm-to-oci and
/// Krustlet's era.
pub const WASM_LAYER_TYPES: [&str; 3] = [
    WASM_LAYER,
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// Manifests larger than this are refused (the distribution spec's
/// recommended limit for registries).
pub(super) const MAX_MANIFEST_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// An image manifest or an index (the fields atoll reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

/// What a manifest points atoll to.
#[derive(Debug)]
pub(super) enum Parsed {
    /// An index: fetch this manifest (by digest) next.
    Index(Digest),
    /// A manifest with one wasm layer.
    Wasm { layer: Descriptor, digest: Digest },
}

/// Reads a manifest or index. `content_type` is the response's.
///
/// # Errors
/// [`OciError::BadManifest`] for malformed JSON or digests, and
/// [`OciError::NotWasm`] when it is not a wasm artifact.
pub(super) fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, OciError> {
    let doc: Document = serde_json::from_slice(body).map_err(|e| OciError::BadManifest {
        reason: format!("not a manifest: {e}"),
    })?;
    let media_type = doc
        .media_type
        .as_deref()
        .or(content_type)
        .unwrap_or(OCI_MANIFEST);
    if let Some(manifests) = doc.manifests {
        if ![OCI_INDEX, DOCKER_LIST].contains(&media_type) && doc.media_type.is_some() {
            return Err(OciError::BadManifest {
                reason: format!("a document with `manifests` has media type {media_type}"),
            });
        }
        return pick_from_index(manifests);
    }
    if ![OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type) {
        return Err(OciError::NotWasm {
            reason: format!("the manifest's media type is {media_type}, not {OCI_MANIFEST}"),
        });
    }
    let wasm: Vec<&Descriptor> = doc
        .layers
        .iter()
        .filter(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
        .collect();
    let layer = match wasm.as_slice() {
        [one] => (*one).clone(),
        [] => {
            let layers: Vec<&str> = doc.layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(OciError::NotWasm {
                reason: format!(
                    "no layer of a wasm media type ({}); config {}, layers {layers:?}",
                    WASM_LAYER_TYPES.join(", "),
                    doc.config
                        .as_ref()
                        .map_or("absent", |c| c.media_type.as_str()),
                ),
            });
        }
        more => {
            return Err(OciError::NotWasm {
                reason: format!(
                    "{} wasm layers; atoll loads an artifact with exactly one",
                    more.len()
                ),
            });
        }
    };
    let digest = descriptor_digest(&layer)?;
    Ok(Parsed::Wasm { layer, digest })
}

/// The entry for wasm (architecture `wasm` or an OS `wasi*`), or the only one.
fn pick_from_index(manifests: Vec<Descriptor>) -> Result<Parsed, OciError> {
    let is_wasm = |d: &Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.architecture == "wasm" || p.os.starts_with("wasi"))
    };
    let chosen = match manifests.iter().find(|d| is_wasm(d)) {
        Some(d) => d.clone(),
        None if manifests.len() == 1 => manifests[0].clone(),
        None => {
            let platforms: Vec<String> = manifests
                .iter()
                .map(|d| {
                    d.platform.as_ref().map_or("unspecified".into(), |p| {
                        format!("{}/{}", p.os, p.architecture)
                    })
                })
                .collect();
            return Err(OciError::NotWasm {
                reason: format!("the index has no wasm entry (platforms {platforms:?})"),
            });
        }
    };
    let digest = descriptor_digest(&chosen)?;
    Ok(Parsed::Index(digest))
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest, OciError> {
    parse_digest(&d.digest).map_err(|reason| OciError::BadManifest {
        reason: format!("descriptor digest: {reason}"),
    })
}

/// The manifest [`push`](super::push) writes: the CNCF wasm artifact layout
/// (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer).
pub(super) fn wasm_artifact(config: &Descriptor, layer: &Descriptor) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    })
    .to_string()
    .into_bytes()
}
