//! Compiled components on disk, sealed with a key only this atoll knows.
//!
//! Deserializing a compiled component runs its native code: whoever can
//! write the cache directory could otherwise make atoll run anything. So
//! every file carries an HMAC-SHA256 over the component's digest, the engine
//! hash and the serialized body, keyed by a [`SealKey`]:
//!
//! - with `--plugin-cache-key-file` (a Secret mounted into the pod), every
//!   replica and every restart shares the key, so a restart reuses what the
//!   last run compiled; anyone who can read that Secret can forge files, so
//!   it must be readable by atoll only;
//! - without it, each process draws a random key at start: a file written by
//!   an earlier process (or anyone else) fails the seal and is recompiled,
//!   so the cache only saves recompiling within one process (a plugin
//!   reloaded to an earlier version). Nothing on disk can be forged.
//!
//! Guarantee: a file is deserialized only if its seal verifies under the key
//! of this process; anything else (corrupt, truncated, foreign, from another
//! key) is refused, logged, and recompiled, never deserialized. The
//! directory is bounded in bytes: after each write the least recently used
//! files (by modification time, refreshed on use) are removed beyond
//! [`DiskCache::max_bytes`].

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::contract::Digest;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a seal.
const SEAL_BYTES: usize = 32;

/// The key sealing compiled components (at least 32 bytes).
#[derive(Clone)]
pub struct SealKey(Vec<u8>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Why a seal key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    #[error("cannot read the plugin cache key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the plugin cache key file {path} holds {bytes} bytes; it needs at least 32 random bytes (e.g. `head -c 32 /dev/urandom > key`, or a Secret created from that)"
    )]
    Short { path: PathBuf, bytes: usize },
    #[error("cannot draw a random plugin cache key from /dev/urandom: {0}")]
    Random(std::io::Error),
}

impl SealKey {
    /// A fresh random key for this process.
    ///
    /// # Errors
    /// `/dev/urandom` cannot be read.
    pub fn random() -> Result<Self, SealKeyError> {
        use std::io::Read as _;
        let mut key = vec![0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(SealKeyError::Random)?;
        Ok(SealKey(key))
    }

    /// The key in `path` (e.g. a mounted Secret), at least 32 bytes;
    /// surrounding whitespace is part of the key.
    ///
    /// # Errors
    /// The file cannot be read or is too short.
    pub fn from_file(path: &Path) -> Result<Self, SealKeyError> {
        let key = std::fs::read(path).map_err(|source| SealKeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if key.len() < 32 {
            return Err(SealKeyError::Short {
                path: path.to_path_buf(),
                bytes: key.len(),
            });
        }
        Ok(SealKey(key))
    }

    /// A key from bytes handed over a private pipe (the compiler child).
    pub(super) fn from_bytes(key: Vec<u8>) -> Self {
        SealKey(key)
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The seal of `body` for `digest` under `engine_hash`.
    pub(super) fn seal(&self, digest: Digest, engine_hash: &str, body: &[u8]) -> [u8; SEAL_BYTES] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(&digest.0);
        mac.update(engine_hash.as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// `sealed` (seal then body) as written by [`SealKey::sealed`], if the
    /// seal verifies (in constant time).
    pub(super) fn open<'a>(
        &self,
        digest: Digest,
        engine_hash: &str,
        sealed: &'a [u8],
    ) -> Option<&'a [u8]> {
        let (seal, body) = sealed.split_at_checked(SEAL_BYTES)?;
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(&digest.0);
        mac.update(engine_hash.as_bytes());
        mac.update(body);
        mac.verify_slice(seal).ok().map(|()| body)
    }

    /// Seal then body.
    pub(super) fn sealed(&self, digest: Digest, engine_hash: &str, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SEAL_BYTES + body.len());
        bytes.extend_from_slice(&self.seal(digest, engine_hash, body));
        bytes.extend_from_slice(body);
        bytes
    }
}

/// Deserialize `sealed` if its seal verifies under `key`: the only place
/// atoll turns bytes into native code.
pub(super) fn deserialize_sealed(
    engine: &Engine,
    key: &SealKey,
    digest: Digest,
    engine_hash: &str,
    sealed: &[u8],
) -> Result<Component, String> {
    let Some(body) = key.open(digest, engine_hash, sealed) else {
        return Err("its seal does not verify under this atoll's key".into());
    };
    // SAFETY: wasmtime requires the bytes to come from `serialize` of a
    // compatible engine. The HMAC proves these are exactly the bytes an atoll
    // holding this key serialized for this component under this engine hash
    // (this process, its compiler child, or a replica sharing the key file),
    // and wasmtime checks version and configuration again itself.
    // The one audited unsafe block of the host.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, body) };
    component.map_err(|e| format!("{e:#}"))
}

/// Compiled components on disk: `<dir>/<digest>-<engine hash>.cwasm`, each a
/// seal followed by the serialized component.
pub(super) struct DiskCache {
    pub(super) dir: PathBuf,
    /// Identifies the engine's configuration and wasmtime version; a file
    /// written by another build is simply never looked up.
    pub(super) engine_hash: String,
    pub(super) key: SealKey,
    /// Most bytes of files kept in `dir` (the least recently used go first).
    pub(super) max_bytes: u64,
}

impl DiskCache {
    pub(super) fn path(&self, digest: Digest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            hex::encode(digest.0),
            self.engine_hash
        ))
    }

    /// Whether a file for `digest` exists (not yet verified: [`DiskCache::load`]
    /// checks its seal).
    pub(super) fn holds(&self, digest: Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The component cached for `digest`, if a file sealed with this key
    /// exists. A file that does not verify is removed.
    pub(super) fn load(&self, engine: &Engine, digest: Digest) -> Option<Component> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        match deserialize_sealed(engine, &self.key, digest, &self.engine_hash, &bytes) {
            Ok(component) => {
                // Refresh the file's age for the LRU.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(component)
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "refusing a compiled-plugin cache file; compiling instead");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Write `body` (a serialized component) sealed, atomically (temporary
    /// file, then rename), so a crash mid-write leaves no half file; then
    /// evict beyond [`DiskCache::max_bytes`]. Failures only cost a recompile.
    pub(super) fn store(&self, digest: Digest, body: &[u8]) {
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.path(digest);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, self.key.sealed(digest, &self.engine_hash, body))?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compiled-plugin cache");
        }
        self.evict();
    }

    /// Remove the least recently used `.cwasm` files until the rest fit.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), bytes = len, "evicted a compiled plugin from the disk cache");
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2 ("Jefe"), through the same Mac type.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_seal_verifies_only_under_its_key_digest_and_engine() {
        let key = SealKey::random().unwrap();
        let other = SealKey::random().unwrap();
        let digest = Digest::of(b"component");
        let sealed = key.sealed(digest, "e1", b"body");
        assert_eq!(key.open(digest, "e1", &sealed), Some(&b"body"[..]));
        assert_eq!(other.open(digest, "e1", &sealed), None);
        assert_eq!(key.open(Digest::of(b"other"), "e1", &sealed), None);
        assert_eq!(key.open(digest, "e2", &sealed), None);
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(digest, "e1", &flipped), None);
        assert_eq!(key.open(digest, "e1", &sealed[..31]), None);
    }

    #[test]
    fn short_key_files_are_refused_naming_the_fix() {
        let dir = std::env::temp_dir().join(format!("atoll-sealkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, b"short").unwrap();
        let err = SealKey::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("5 bytes") && err.contains("/dev/urandom"),
            "{err}"
        );
        std::fs::write(&path, [7u8; 32]).unwrap();
        assert!(SealKey::from_file(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
