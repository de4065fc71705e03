//! Compiled components on disk, so a restart does not recompile.
//!
//! Guarantee: a file is deserialized only if its seal (sha256 over the
//! component's digest and the file's body) matches; a corrupt, truncated or
//! foreign file is ignored and rewritten, costing a compile, never a wrong or
//! unsound component.

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::contract::Digest;

/// Compiled components on disk: `<dir>/<digest>-<engine hash>.cwasm`, each a
/// seal (sha256 of the component's digest and the serialized component)
/// followed by the serialized component. The seal binds a file to the
/// component it was compiled from: a file renamed or copied from another
/// component is as unusable as a corrupt one.
pub(super) struct DiskCache {
    pub(super) dir: PathBuf,
    /// Identifies the engine's configuration and wasmtime version; a file
    /// written by another build is simply never looked up.
    pub(super) engine_hash: String,
}

impl DiskCache {
    pub(super) fn path(&self, digest: Digest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            hex::encode(digest.0),
            self.engine_hash
        ))
    }

    /// The component cached for `digest`, if a sound file exists.
    pub(super) fn load(&self, engine: &Engine, digest: Digest) -> Option<Component> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        let checked = bytes
            .split_at_checked(32)
            .filter(|(seal, body)| Self::seal(digest, body).as_slice() == *seal);
        let Some((_, body)) = checked else {
            tracing::warn!(path = %path.display(), "ignoring a corrupt compiled-plugin cache file");
            return None;
        };
        // SAFETY: wasmtime requires the bytes to come from `serialize` of a
        // compatible engine. The seal proves these are exactly the bytes atoll
        // wrote for this component under this engine hash, and wasmtime checks
        // version and configuration again itself.
        // The one audited unsafe block of the host.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, body) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable compiled-plugin cache file");
                None
            }
        }
    }

    fn seal(digest: Digest, body: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(digest.0);
        hasher.update(body);
        hasher.finalize().into()
    }

    /// Write atomically (temporary file, then rename), so a crash mid-write
    /// leaves no half file. Failures only cost a recompile later.
    pub(super) fn store(&self, digest: Digest, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let body = component.serialize().map_err(std::io::Error::other)?;
            std::fs::create_dir_all(&self.dir)?;
            let path = self.path(digest);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut bytes = Vec::with_capacity(32 + body.len());
            bytes.extend_from_slice(&Self::seal(digest, &body));
            bytes.extend_from_slice(&body);
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compiled-plugin cache");
        }
    }
}
