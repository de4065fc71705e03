//! A compiled-plugin cache that the `atoll` processes tests start share.
//!
//! Without `--plugin-cache-key-file` every atoll process draws a random key
//! and refuses the cache files of every other, so each `atoll render`, `atoll
//! plugin test` or `atoll run` a test starts compiles the five built-ins
//! again (seconds each in a debug build). With one key file, as an operator
//! sets it up, the first process compiles and the others load from disk.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The variables naming the key file and the cache directory under `dir`
/// (both flags of `atoll`: `--plugin-cache-key-file`, `--plugin-cache-dir`).
/// The 32-byte key is drawn once and kept in `dir/seal.key`, written whole
/// (a temporary file renamed) so processes racing to make it never read
/// half a key.
///
/// # Panics
/// `dir` cannot be created or written, or `/dev/urandom` cannot be read.
pub fn env(dir: &Path) -> [(&'static str, PathBuf); 2] {
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("creating the plugin cache {}: {e}", dir.display()));
    let key = dir.join("seal.key");
    if !key.exists() {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .expect("reading /dev/urandom");
        let tmp = dir.join(format!("seal.key.{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &key))
            .unwrap_or_else(|e| panic!("writing {}: {e}", key.display()));
    }
    [
        ("ATOLL_PLUGIN_CACHE_KEY_FILE", key),
        ("ATOLL_PLUGIN_CACHE_DIR", dir.join("components")),
    ]
}
