//! Pushing a wasm component as the CNCF wasm OCI artifact layout (for
//! `atoll plugin push` and tests): blobs by `POST` + monolithic `PUT`, then
//! the manifest.

use http::header::{CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use hyper::body::Bytes;

use super::manifest::{self, Descriptor};
use super::transport::{Session, read_error_body};
use super::{Credentials, InsecurePolicy, OciError, Reference, status_error};
use crate::contract::Digest;

/// What [`push`] wrote.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// sha256 of the manifest.
    pub manifest_digest: Digest,
    /// sha256 of the wasm layer (the digest the loaded plugin reports).
    pub layer_digest: Digest,
    /// The reference pushed, pinned to the manifest digest.
    pub pinned: Reference,
}

/// Pushes `wasm` to `reference` (its tag, or its digest when it has no tag)
/// as a manifest with config `application/vnd.wasm.config.v0+json` and one
/// `application/wasm` layer.
///
/// # Errors
/// [`OciError::NotWasm`] when `wasm` lacks the wasm magic bytes, or any
/// error of the registry (as for [`pull`](super::pull)).
pub async fn push(
    reference: &Reference,
    credentials: Option<&Credentials>,
    wasm: &[u8],
    insecure: &InsecurePolicy,
) -> Result<Pushed, OciError> {
    if !wasm.starts_with(b"\0asm") {
        return Err(OciError::NotWasm {
            reason: "the file does not start with the wasm magic bytes".into(),
        });
    }
    let mut session = Session::new(reference, credentials, insecure, "pull,push")?;
    let layer_digest = Digest::of(wasm);
    // The wasm config's required fields; `layerDigests` ties it to the layer.
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest.to_string()],
    })
    .to_string();
    let config = Descriptor {
        media_type: manifest::WASM_CONFIG.into(),
        digest: upload_blob(&mut session, reference, config.as_bytes())
            .await?
            .to_string(),
        size: config.len() as u64,
        platform: None,
    };
    let layer = Descriptor {
        media_type: manifest::WASM_LAYER.into(),
        digest: upload_blob(&mut session, reference, wasm)
            .await?
            .to_string(),
        size: wasm.len() as u64,
        platform: None,
    };
    let body = manifest::wasm_artifact(&config, &layer);
    let manifest_digest =
        put_manifest(&mut session, reference, &body, manifest::OCI_MANIFEST).await?;
    Ok(Pushed {
        manifest_digest,
        layer_digest,
        pinned: reference.pinned(manifest_digest),
    })
}

/// Uploads one blob to `reference`'s repository; returns its digest.
///
/// # Errors
/// Any error of the registry.
pub async fn push_blob(
    reference: &Reference,
    credentials: Option<&Credentials>,
    bytes: &[u8],
    insecure: &InsecurePolicy,
) -> Result<Digest, OciError> {
    let mut session = Session::new(reference, credentials, insecure, "pull,push")?;
    upload_blob(&mut session, reference, bytes).await
}

/// Puts an arbitrary manifest (any layout, for tests of what pulls refuse)
/// at `reference`'s tag or digest; returns its digest.
///
/// # Errors
/// Any error of the registry (which checks that the blobs it names exist).
pub async fn push_manifest(
    reference: &Reference,
    credentials: Option<&Credentials>,
    body: &[u8],
    media_type: &str,
    insecure: &InsecurePolicy,
) -> Result<Digest, OciError> {
    let mut session = Session::new(reference, credentials, insecure, "pull,push")?;
    put_manifest(&mut session, reference, body, media_type).await
}

async fn upload_blob(
    session: &mut Session<'_>,
    reference: &Reference,
    bytes: &[u8],
) -> Result<Digest, OciError> {
    let digest = Digest::of(bytes);
    let start = session.url("blobs/uploads/");
    let response = session
        .send(Method::POST, &start, &[], Bytes::new())
        .await?;
    let status = response.status();
    if status != StatusCode::ACCEPTED {
        return Err(status_error(
            session,
            status,
            &start,
            read_error_body(response).await,
        ));
    }
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| OciError::RegistryError {
            registry: reference.registry().to_owned(),
            reason: format!("202 for POST {start} without a Location"),
        })?;
    let start_uri: http::Uri = start
        .parse()
        .map_err(|e| session.unavailable(format!("bad URL {start}: {e}")))?;
    let upload = super::transport::resolve(&start_uri, location);
    let separator = if upload.contains('?') { '&' } else { '?' };
    let url = format!(
        "{upload}{separator}digest={}",
        digest.to_string().replace(':', "%3A")
    );
    let length = bytes.len().to_string();
    let response = session
        .send(
            Method::PUT,
            &url,
            &[
                ("content-type", "application/octet-stream"),
                ("content-length", &length),
            ],
            Bytes::copy_from_slice(bytes),
        )
        .await?;
    let status = response.status();
    if status != StatusCode::CREATED {
        return Err(status_error(
            session,
            status,
            &url,
            read_error_body(response).await,
        ));
    }
    Ok(digest)
}

async fn put_manifest(
    session: &mut Session<'_>,
    reference: &Reference,
    body: &[u8],
    media_type: &str,
) -> Result<Digest, OciError> {
    let target = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_owned(),
        (None, Some(digest)) => digest.to_string(),
        (None, None) => unreachable_reference(reference)?,
    };
    let url = session.url(&format!("manifests/{target}"));
    let response = session
        .send(
            Method::PUT,
            &url,
            &[(CONTENT_TYPE.as_str(), media_type)],
            Bytes::copy_from_slice(body),
        )
        .await?;
    let status = response.status();
    if status != StatusCode::CREATED {
        return Err(status_error(
            session,
            status,
            &url,
            read_error_body(response).await,
        ));
    }
    Ok(Digest::of(body))
}

/// [`Reference::parse`] refuses references without a tag or digest; this
/// keeps the error honest should that ever change.
fn unreachable_reference(reference: &Reference) -> Result<String, OciError> {
    Err(OciError::InvalidReference {
        reference: reference.to_string(),
        part: "tag",
        reason: "pushing needs a tag or a digest".into(),
    })
}
