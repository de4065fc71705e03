//! From a plugin's source directory to its component: `atoll plugin test DIR`
//! builds first, with the toolchain the directory's files name.
//!
//! - `Cargo.toml`: `cargo build --release --target wasm32-wasip2`; the
//!   component is the `.wasm` cargo reports for that package.
//! - `package.json` (TypeScript, jco/componentize-js): `npm run build`, which
//!   must write `dist/plugin.wasm` (the TypeScript SDK's templates do).
//! - `app.py` (Python, componentize-py): `componentize-py` against the WIT
//!   and the Python SDK embedded in atoll, writing `build/plugin.wasm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The plugin languages `atoll plugin new` and `atoll plugin test` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Typescript,
}

/// Which language the plugin in `dir` is written in.
///
/// # Errors
/// `dir` holds none of the files that say.
pub fn detect(dir: &Path) -> Result<Lang> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("package.json").is_file() {
        Ok(Lang::Typescript)
    } else if dir.join("app.py").is_file() {
        Ok(Lang::Python)
    } else {
        bail!(
            "{} is not a plugin source directory: it has no Cargo.toml (Rust), package.json (TypeScript) or app.py (Python); pass a .wasm component instead",
            dir.display()
        )
    }
}

/// Build the plugin in `dir` and return its component's path.
///
/// # Errors
/// The toolchain is missing or the build fails (its output is on stderr).
pub fn build(dir: &Path) -> Result<PathBuf> {
    let lang = detect(dir)?;
    eprintln!("# building {} ({lang:?})", dir.display());
    match lang {
        Lang::Rust => build_rust(dir),
        Lang::Python => build_python(dir),
        Lang::Typescript => build_typescript(dir),
    }
}

fn build_rust(dir: &Path) -> Result<PathBuf> {
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .with_context(|| format!("cannot resolve {}/Cargo.toml", dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::piped());
    // Host-only flags (coverage, -D warnings in CI) must not reach the guest.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "cargo build failed for {} (see above); is the target installed? `rustup target add wasm32-wasip2`",
            manifest.display()
        );
    }
    // The artifact of this package (not of its dependencies) that is a component.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| {
            format!(
                "cargo built {} but no .wasm: the package needs `crate-type = [\"cdylib\", \"rlib\"]` under [lib]",
                manifest.display()
            )
        })
}

/// The TypeScript hook: `npm run build` writes `dist/plugin.wasm`.
fn build_typescript(dir: &Path) -> Result<PathBuf> {
    run(
        Command::new("npm").args(["run", "build"]).current_dir(dir),
        "npm run build",
    )?;
    let out = dir.join("dist/plugin.wasm");
    if !out.is_file() {
        bail!(
            "`npm run build` in {} did not write dist/plugin.wasm",
            dir.display()
        );
    }
    Ok(out)
}

fn build_python(dir: &Path) -> Result<PathBuf> {
    let tool = componentize_py()?;
    // The WIT and the SDK come from this atoll, so the component is built
    // against the contract version this atoll speaks.
    let scratch = dir.join("build");
    let wit = scratch.join("wit");
    std::fs::create_dir_all(&wit).with_context(|| format!("cannot create {}", wit.display()))?;
    std::fs::write(wit.join("storage.wit"), crate::cli::python_sdk::WIT)?;
    let sdk = match std::env::var_os("ATOLL_PYTHON_SDK") {
        Some(path) => PathBuf::from(path),
        None => {
            let sdk = scratch.join("sdk");
            crate::cli::python_sdk::write_to(&sdk)?;
            sdk
        }
    };
    let out = scratch.join("plugin.wasm");
    run(
        Command::new(&tool)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "plugin", "componentize", "app", "-p"])
            .arg(dir)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(&out),
        "componentize-py",
    )?;
    Ok(out)
}

/// `$ATOLL_COMPONENTIZE_PY`, else `componentize-py` on PATH, else the one
/// `scripts/python-sdk.sh setup` installs under the user's cache.
fn componentize_py() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ATOLL_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("componentize-py"))
            .find(|p| p.is_file())
    });
    if let Some(path) = on_path {
        return Ok(path);
    }
    let venv = crate::cli::python_sdk::venv_dir().map(|v| v.join("bin/componentize-py"));
    match venv {
        Some(path) if path.is_file() => Ok(path),
        _ => bail!(
            "componentize-py not found: set ATOLL_COMPONENTIZE_PY, put it on PATH (`pip install componentize-py=={}`), or run scripts/python-sdk.sh setup",
            crate::cli::python_sdk::COMPONENTIZE_PY_VERSION
        ),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above");
    }
    Ok(())
}
