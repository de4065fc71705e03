//! The Python SDK (`guest-sdk/python/atoll_sdk`) and the WIT contract,
//! embedded so `atoll plugin test` and `atoll plugin new` build Python
//! plugins anywhere, against the contract this atoll speaks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The componentize-py release the SDK is tested with (pinned in
/// `scripts/python-sdk.sh` too).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// `wit/storage.wit`.
pub const WIT: &str = include_str!("../../../wit/storage.wit");

/// Every file of the `atoll_sdk` package: (path under the package, text).
/// A test checks this list against the directory.
pub const FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/__init__.py"),
    ),
    (
        "atomix.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/atomix.py"),
    ),
    (
        "canonical.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/canonical.py"),
    ),
    (
        "component.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/component.py"),
    ),
    (
        "config.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/config.py"),
    ),
    (
        "dispatch.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/dispatch.py"),
    ),
    (
        "k8s.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/k8s.py"),
    ),
    (
        "log.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/log.py"),
    ),
    (
        "output.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/output.py"),
    ),
    (
        "quantity.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/quantity.py"),
    ),
    (
        "testing.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/testing.py"),
    ),
    (
        "types.py",
        include_str!("../../../guest-sdk/python/atoll_sdk/types.py"),
    ),
];

/// Write the package as `<dir>/atoll_sdk/...` (so `dir` goes on the Python
/// path), replacing what an older atoll wrote there.
///
/// # Errors
/// A file cannot be written.
pub fn write_to(dir: &Path) -> Result<()> {
    let package = dir.join("atoll_sdk");
    std::fs::create_dir_all(&package)
        .with_context(|| format!("cannot create {}", package.display()))?;
    for (name, text) in FILES {
        let path = package.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The virtual environment `scripts/python-sdk.sh setup` creates:
/// `$ATOLL_PYTHON_VENV`, else `$XDG_CACHE_HOME/atoll/python-sdk/venv`, else
/// `~/.cache/atoll/python-sdk/venv`.
pub fn venv_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ATOLL_PYTHON_VENV") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("atoll/python-sdk/venv"))
}

#[cfg(test)]
mod tests {
    use super::FILES;

    #[test]
    fn every_sdk_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/python/atoll_sdk");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            on_disk, embedded,
            "update FILES in host/src/cli/python_sdk.rs"
        );
    }
}
