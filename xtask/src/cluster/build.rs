//! Control-plane binaries, built from the Go module proxy and cached per version.
//!
//! - kube-apiserver, kube-controller-manager and kube-scheduler: one `go build`
//!   of the wrapper module `testenv/k8s` (pins `k8s.io/kubernetes` and replaces
//!   its staging modules with their published releases).
//! - etcd: `go build` of the wrapper module `testenv/etcd` (etcd's own go.mod has
//!   replace directives, which `go install module@version` refuses).
//! - kwok: `go install` at [`KWOK_VERSION`]. Its Stages (how fake Nodes, Pods
//!   and volumes progress) are in `testenv/kwok/stages.yaml`, copied from that release.
//! - CoreDNS: `go build` of the wrapper module `testenv/coredns` (its default
//!   plugin set, which includes `kubernetes`); built on its own ([`ensure_coredns`])
//!   because a control plane started before CoreDNS existed gets it added later.
//! - The CNCF Distribution registry (`cmd/registry`) and a bcrypt htpasswd
//!   helper: `go build` of the wrapper module `testenv/registry`
//!   ([`ensure_registry`]), on its own for the same reason.
//!
//! The versions come from the wrapper go.mod files, so bumping a version there
//! builds into a new cache directory, `${XDG_CACHE_HOME:-~/.cache}/atoll/testenv/<name>-<version>/`.
//! A directory is complete or absent: builds go to a scratch directory that is
//! renamed into place at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

const KWOK_VERSION: &str = "v0.8.0";

pub struct Binaries {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub scheduler: PathBuf,
    pub kwok: PathBuf,
    /// kwok `--config` file holding its Stage objects (in the repository).
    pub kwok_stages: PathBuf,
}

/// Returns the cached binaries, building whichever are missing.
pub fn ensure_binaries() -> Result<Binaries> {
    binaries(true)
}

/// Returns the cached binaries without building any: fails, naming the
/// command that builds them, when one is missing. For tests, which must not
/// spend minutes in `go build` nor pass without a control plane.
pub fn built_binaries() -> Result<Binaries> {
    binaries(false)
}

/// The cached CoreDNS binary, built first if missing.
pub fn ensure_coredns() -> Result<PathBuf> {
    let module = workspace().join("testenv/coredns");
    let version = required_version(&module, "github.com/coredns/coredns")?;
    let dir = cached(
        &cache_dir()?,
        &format!("coredns-{version}"),
        &["coredns"],
        true,
        |out| {
            Go::find()?.run(
                &module,
                &["build", "-trimpath", "-ldflags=-s -w", "-o"],
                out.join("coredns"),
                &["github.com/coredns/coredns"],
            )
        },
    )?;
    Ok(dir.join("coredns"))
}

/// The cached directory holding `registry` (Distribution's `cmd/registry`)
/// and `htpasswd` (a bcrypt line for the authenticated registry), built
/// first if missing.
pub fn ensure_registry() -> Result<PathBuf> {
    let module = workspace().join("testenv/registry");
    let version = required_version(&module, "github.com/distribution/distribution/v3")?;
    cached(
        &cache_dir()?,
        &format!("registry-{version}"),
        &["registry", "htpasswd"],
        true,
        |out| {
            let go = Go::find()?;
            let flags = ["build", "-trimpath", "-ldflags=-s -w", "-o"];
            go.run(
                &module,
                &flags,
                out.join("registry"),
                &["github.com/distribution/distribution/v3/cmd/registry"],
            )?;
            go.run(&module, &flags, out.join("htpasswd"), &["./htpasswd"])
        },
    )
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}

fn binaries(may_build: bool) -> Result<Binaries> {
    let root = workspace();
    let cache = cache_dir()?;
    // Found only when something must be built: using cached binaries needs no Go.
    let go = Go::find;

    let k8s_module = root.join("testenv/k8s");
    let k8s_version = required_version(&k8s_module, "k8s.io/kubernetes")?;
    let k8s = cached(
        &cache,
        &format!("k8s-{k8s_version}"),
        &[
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ],
        may_build,
        |out| go()?.build_kubernetes(&k8s_module, &k8s_version, out),
    )?;

    let etcd_module = root.join("testenv/etcd");
    let etcd_version = required_version(&etcd_module, "go.etcd.io/etcd/server/v3")?;
    let etcd = cached(
        &cache,
        &format!("etcd-{etcd_version}"),
        &["etcd"],
        may_build,
        |out| {
            go()?.run(
                &etcd_module,
                &["build", "-trimpath", "-ldflags=-s -w", "-o"],
                out.join("etcd"),
                &["go.etcd.io/etcd/server/v3"],
            )
        },
    )?;

    let kwok = cached(
        &cache,
        &format!("kwok-{KWOK_VERSION}"),
        &["kwok"],
        may_build,
        |out| go()?.install_kwok(out),
    )?;

    Ok(Binaries {
        etcd: etcd.join("etcd"),
        apiserver: k8s.join("kube-apiserver"),
        controller_manager: k8s.join("kube-controller-manager"),
        scheduler: k8s.join("kube-scheduler"),
        kwok: kwok.join("kwok"),
        kwok_stages: root.join("testenv/kwok/stages.yaml"),
    })
}

fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?,
        )
        .join(".cache"),
    };
    Ok(base.join("atoll/testenv"))
}

/// `<cache>/<key>` if it holds all `files`, else (when `may_build`) runs
/// `build` into a scratch directory and moves that into place.
fn cached(
    cache: &Path,
    key: &str,
    files: &[&str],
    may_build: bool,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = cache.join(key);
    if files.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    if !may_build {
        bail!(
            "the control-plane binaries are not built ({} lacks some of {files:?}); \
             build them with `cargo xtask cluster up` (needs Go; several minutes the first time)",
            dir.display()
        );
    }
    let scratch = cache.join(format!("{key}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    eprintln!(
        "building {key} into {} (first use only; several minutes for Kubernetes)",
        dir.display()
    );
    let started = Instant::now();
    let built = build(&scratch).and_then(|()| {
        for f in files {
            anyhow::ensure!(
                scratch.join(f).is_file(),
                "the build of {key} did not produce {f}"
            );
        }
        Ok(())
    });
    if let Err(err) = built {
        let _ = fs::remove_dir_all(&scratch);
        return Err(err.context(format!("building {key}")));
    }
    // An incomplete directory from an older layout would block the rename.
    let _ = fs::remove_dir_all(&dir);
    if let Err(err) = fs::rename(&scratch, &dir) {
        // A concurrent build may have won the race; its result is as good as ours.
        let _ = fs::remove_dir_all(&scratch);
        if !files.iter().all(|f| dir.join(f).is_file()) {
            return Err(err)
                .with_context(|| format!("moving the build of {key} into {}", dir.display()));
        }
    }
    eprintln!("built {key} in {:.0}s", started.elapsed().as_secs_f64());
    Ok(dir)
}

/// The version `module` is required at in `<wrapper>/go.mod`.
fn required_version(wrapper: &Path, module: &str) -> Result<String> {
    let go_mod = wrapper.join("go.mod");
    let text =
        fs::read_to_string(&go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    text.lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("require")
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .find(|words| words.first() == Some(&module))
        .and_then(|words| words.get(1).map(|v| v.to_string()))
        .with_context(|| format!("{} does not require {module}", go_mod.display()))
}

struct Go {
    bin: PathBuf,
}

impl Go {
    /// `go` from PATH, else the official tarball's usual location.
    fn find() -> Result<Self> {
        for bin in ["go", "/usr/local/go/bin/go"] {
            if Command::new(bin)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(Self { bin: bin.into() });
            }
        }
        bail!(
            "the Go toolchain is needed to build the control plane: install Go >= 1.26 (go on PATH or /usr/local/go/bin/go)"
        )
    }

    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        // Static binaries: no C toolchain needed, as in Kubernetes' own release builds.
        cmd.current_dir(dir).env("CGO_ENABLED", "0");
        cmd
    }

    /// `go <args> <out> <rest>` in `dir`, with Go's output going to our stderr.
    fn run(&self, dir: &Path, args: &[&str], out: PathBuf, rest: &[&str]) -> Result<()> {
        let status = self
            .command(dir)
            .args(args)
            .arg(out)
            .args(rest)
            .status()
            .context("running go")?;
        anyhow::ensure!(status.success(), "go {} failed ({status})", args[0]);
        Ok(())
    }

    /// One `go build` for the three commands so they share compiled packages;
    /// the `-X` flags give `--version` and `/version` the release's identity
    /// (the same variables Kubernetes' hack/lib/version.sh sets).
    fn build_kubernetes(&self, module: &Path, version: &str, out: &Path) -> Result<()> {
        let mut parts = version.trim_start_matches('v').split('.');
        let (major, minor) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let build_date = self.module_time(module, "k8s.io/kubernetes")?;
        let mut ldflags = String::from("-s -w");
        for pkg in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            for (var, value) in [
                ("gitVersion", version),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("buildDate", &build_date),
            ] {
                ldflags.push_str(&format!(" -X {pkg}.{var}={value}"));
            }
        }
        let out = format!("{}/", out.display()); // a directory: several main packages
        self.run(
            module,
            &["build", "-trimpath", &format!("-ldflags={ldflags}"), "-o"],
            out.into(),
            &[
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler",
            ],
        )
    }

    /// The module version's publication time (RFC 3339), used as the build date
    /// so that rebuilding the same version stamps the same date.
    fn module_time(&self, module_dir: &Path, module: &str) -> Result<String> {
        let json = self.output(module_dir, &["list", "-m", "-json", module])?;
        json_string(&json, "Time")
            .with_context(|| format!("no Time in `go list -m -json {module}`"))
    }

    fn install_kwok(&self, out: &Path) -> Result<()> {
        let module = format!("sigs.k8s.io/kwok@{KWOK_VERSION}");
        let status = self
            .command(out)
            .env("GOBIN", out)
            .args([
                "install",
                "-trimpath",
                "-ldflags=-s -w",
                &format!("sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"),
            ])
            .status()
            .context("running go install")?;
        anyhow::ensure!(status.success(), "go install {module} failed ({status})");
        Ok(())
    }

    fn output(&self, dir: &Path, args: &[&str]) -> Result<String> {
        let out = self
            .command(dir)
            .args(args)
            .output()
            .context("running go")?;
        anyhow::ensure!(
            out.status.success(),
            "go {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The value of the first `"key": "value"` in Go's indented JSON output; enough
/// for the plain string read here without pulling a JSON parser into xtask.
fn json_string(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\": \"");
    let start = json.find(&needle)? + needle.len();
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}
