//! `atoll plugin new NAME --lang rust|python|typescript`: scaffold a plugin
//! whose build, unit tests and golden cases pass as generated, and print the
//! commands to test and load it.
//!
//! Every language's template renders the same objects for the same
//! Database, so they share one golden case (`templates/shared/basic.json`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::plugin_test::source::Lang;

/// `atoll plugin new`'s arguments.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin's name (what Databases put in `spec.storage.plugin`): a
    /// DNS label such as `my-store`.
    pub name: String,
    /// Language of the plugin.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Directory to create (default: ./NAME); must not exist.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The atoll repository checkout whose `guest-sdk` a Rust plugin depends
    /// on (default: found from the current directory upwards).
    #[arg(long, value_name = "DIR")]
    pub atoll_repo: Option<PathBuf>,
}

const GOLDEN: &str = include_str!("templates/shared/basic.json");

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("templates/python/app.py")),
    ("plugin.py", include_str!("templates/python/plugin.py")),
    ("conftest.py", include_str!("templates/python/conftest.py")),
    (
        "pyproject.toml",
        include_str!("templates/python/pyproject.toml"),
    ),
    (
        "tests/test_plugin.py",
        include_str!("templates/python/tests/test_plugin.py"),
    ),
];

const TYPESCRIPT: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("templates/typescript/package.json"),
    ),
    (
        "tsconfig.json",
        include_str!("templates/typescript/tsconfig.json"),
    ),
    ("plugin.ts", include_str!("templates/typescript/plugin.ts")),
    (
        "component.ts",
        include_str!("templates/typescript/component.ts"),
    ),
    (
        "test/plugin.test.ts",
        include_str!("templates/typescript/test/plugin.test.ts"),
    ),
];

/// Scaffold the plugin.
///
/// # Errors
/// A bad name, an existing directory, or a file that cannot be written.
pub fn run(args: NewArgs) -> Result<()> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!("{} exists; pick another --dir or remove it", dir.display());
    }
    let crate_name = format!("atoll-plugin-{}", args.name);
    let (files, sdk): (&[(&str, &str)], String) = match args.lang {
        Lang::Rust => (
            RUST,
            sdk_dir(args.atoll_repo.as_deref(), "guest-sdk", "Cargo.toml")?,
        ),
        Lang::Python => (PYTHON, String::new()),
        // The plugin depends on the SDK checkout by path (`file:`), whose
        // `npm ci && npm run build` must have run.
        Lang::Typescript => (
            TYPESCRIPT,
            sdk_dir(
                args.atoll_repo.as_deref(),
                "guest-sdk/typescript",
                "package.json",
            )?,
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk)
    };
    for (path, text) in files.iter().chain([&("vectors/basic.json", GOLDEN)]) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, fill(text))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.lang == Lang::Python {
        super::python_sdk::write_to(&dir.join("build/sdk"))?;
    }
    let d = dir.display();
    let unit = match args.lang {
        Lang::Rust => format!("cargo test --manifest-path {d}/Cargo.toml"),
        Lang::Python => format!("(cd {d} && python -m pytest)"),
        Lang::Typescript => format!("(cd {d} && npm install && npm test)"),
    };
    let wasm = match args.lang {
        Lang::Rust => format!(
            "{d}/target/wasm32-wasip2/release/{}.wasm",
            crate_name.replace('-', "_")
        ),
        Lang::Typescript => format!("{d}/dist/plugin.wasm"),
        Lang::Python => format!("{d}/build/plugin.wasm"),
    };
    println!(
        "Created {lang:?} plugin {name} in {d}.\n\n\
         Unit tests (native):       {unit}\n\
         Build and golden cases:    atoll plugin test {d}\n\
         Re-record the goldens:     atoll plugin test {d} --update   (review with git diff)\n\
         Render a Database offline: mkdir -p plugins && cp {wasm} plugins/ && atoll render --plugin-dir plugins -f db.yaml\n\
         Load it in a cluster:      atoll run --plugin-dir plugins   (or a ConfigMap labelled atoll.dev/plugin={name}; see docs/plugins.md)",
        lang = args.lang,
        name = args.name,
    );
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.as_bytes()[0].is_ascii_lowercase();
    if ok {
        Ok(())
    } else {
        bail!(
            "{name:?} is not a plugin name: use lowercase letters, digits and '-', starting with a letter (at most 40)"
        )
    }
}

/// The SDK directory `sub` of the atoll checkout (it holds `marker`) that a
/// Rust or TypeScript plugin depends on by path.
fn sdk_dir(repo: Option<&Path>, sub: &str, marker: &str) -> Result<String> {
    let found = match repo {
        Some(repo) => Some(repo.to_path_buf()),
        None => std::env::current_dir()?
            .ancestors()
            .find(|d| d.join(sub).join(marker).is_file())
            .map(Path::to_path_buf),
    };
    let sdk = found
        .map(|r| r.join(sub))
        .filter(|s| s.join(marker).is_file())
        .with_context(|| format!("no atoll checkout found for the SDK in {sub}: pass --atoll-repo DIR (the directory holding {sub}/)"))?;
    Ok(sdk
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", sdk.display()))?
        .display()
        .to_string())
}
