//! Containment on the real control plane: `atoll run` in a memory cgroup of
//! 256 MiB, fed hostile plugins through labelled ConfigMaps: one touching
//! 60 MiB per render used by 8 Databases at once, a config-schema bomb, a
//! multi-memory component, a component slow to compile and one too large.
//! atoll must keep serving (a built-in plugin's Database reaches Ready after
//! each), never be OOM-killed, and report each refused plugin with a reason
//! on its StoragePlugin record. Prints VmHWM and the cgroup's peak after each
//! step.
//!
//! The cgroup: a child of this process's memory cgroup, cgroup v2
//! (`memory.max`) or v1 (`memory.limit_in_bytes`), whichever the machine
//! mounts; the test needs root (or a delegated cgroup) and fails loudly
//! without.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use atoll::api::StoragePlugin;
use atoll_e2e::{KillOnDrop, k, wait_ready};
use atoll_testenv::{TestNamespace, client, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

const HOSTILE: &str = env!("ATOLL_TEST_HOSTILE_WASM");
const BOMB: &str = env!("ATOLL_TEST_BOMB_WASM");
const LIMIT: u64 = 256 << 20;

/// A memory cgroup with a limit, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Self {
        let proc = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v2_root = Path::new("/sys/fs/cgroup");
        let (parent, v2) = if v2_root.join("cgroup.controllers").exists() {
            let path = proc
                .lines()
                .find_map(|l| l.strip_prefix("0::/"))
                .expect("a cgroup v2 path");
            (v2_root.join(path), true)
        } else {
            let path = proc
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == "memory")
                        .then(|| path.trim_start_matches('/').to_string())
                })
                .expect("a cgroup v1 memory controller (no cgroup v2 either)");
            (v2_root.join("memory").join(path), false)
        };
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e} (needs root)", dir.display()));
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(dir.join(file), limit.to_string()).unwrap();
        Cgroup { dir, v2 }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Most bytes charged to the cgroup so far.
    fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file).trim().parse().unwrap_or(0)
    }

    /// Processes the kernel's OOM killer killed in the cgroup.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once atoll (dropped first) has exited.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn vm_hwm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "gone".into())
}

/// A core module of `functions` functions `(i32) -> i32`, each `units`
/// times `x = (x * 85) ^ x`, in a component: no plugin at all, and code the
/// compiler cannot fold away, so compiling costs time and memory in
/// proportion to its size (58 MB takes ~27 s and ~500 MB of RSS on the CI
/// machine; a constant-and-drop body was folded and compiled in 2 s).
fn slow_component(functions: u32, units: usize) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 1, 0x7f, 1, 0x7f], &mut module); // one type: (i32) -> i32
    let mut funcs = Vec::new();
    leb(functions.into(), &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, functions as usize));
    section(3, &funcs, &mut module);
    let mut body = vec![0u8]; // no locals but the parameter
    for _ in 0..units {
        // local.get 0; i32.const 85; i32.mul; local.get 0; i32.xor; local.set 0
        body.extend_from_slice(&[0x20, 0, 0x41, 0xd5, 0x00, 0x6c, 0x20, 0, 0x73, 0x21, 0]);
    }
    body.extend_from_slice(&[0x20, 0, 0x0b]); // local.get 0; end
    let mut code = Vec::new();
    leb(functions.into(), &mut code);
    for _ in 0..functions {
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

fn multi_memory_component() -> Vec<u8> {
    let module: &[u8] = &[0, b'a', b's', b'm', 1, 0, 0, 0, 5, 5, 2, 0, 1, 0, 1];
    let mut component = vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0, 1, module.len() as u8];
    component.extend_from_slice(module);
    component
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

async fn plugin_configmap(client: &kube::Client, ns: &str, label: &str, key: &str, bytes: Vec<u8>) {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(format!("plugin-{label}"));
    cm.metadata.labels = Some(BTreeMap::from([(
        "atoll.dev/plugin".to_string(),
        label.to_string(),
    )]));
    cm.binary_data = Some(BTreeMap::from([(key.to_string(), ByteString(bytes))]));
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

/// The StoragePlugin record `name` once it says Failed; returns its error.
async fn refused(client: &kube::Client, name: &str) -> String {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    wait_for(
        &format!("StoragePlugin {name} to be Failed"),
        Duration::from_secs(180),
        || {
            let api = api.clone();
            async move {
                let status = api
                    .get(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                match (status.state.as_str(), status.last_error) {
                    ("Failed", Some(error)) => Ok(error),
                    _ => Err(format!("{:?}", status.state)),
                }
            }
        },
    )
    .await
}

fn database(name: &str, plugin: &str, config: &str) -> String {
    format!(
        "apiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata:\n  name: {name}\nspec:\n  partitions: 1\n  storage:\n    plugin: {plugin}\n    config: {config}\n"
    )
}

/// A built-in (cache) Database reaches Ready: atoll still serves.
async fn still_serves(client: &kube::Client, ns: &str, name: &str) {
    k(
        ns,
        &["apply", "-f", "-"],
        Some(&database(name, "cache", "{}")),
    )
    .await;
    wait_ready(client, ns, name).await;
}

#[tokio::test]
async fn hostile_plugins_in_a_256_mib_cgroup_are_refused_while_atoll_serves() {
    let _records = atoll_e2e::plugin_records_exclusive().await;
    let client = client().await;
    // atoll run installs nothing: the CRDs come first, as in a cluster.
    atoll_testenv::install_crds(&client, atoll::api::crds()).await;
    let ns = TestNamespace::new(&client, "containment").await;
    let n = ns.name();
    let cgroup = Cgroup::new(&format!("atoll-e2e-{n}"), LIMIT);
    let scratch = std::env::temp_dir().join(format!("atoll-{n}"));
    std::fs::create_dir_all(&scratch).unwrap();
    let log_path = scratch.join("atoll.log");

    // atoll moves itself into the cgroup before it allocates anything.
    let inner = atoll_e2e::atoll_command(n);
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            cgroup.dir.display()
        ))
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(["--plugin-compile-timeout", "20s", "--no-plugin-cache"])
        // It compiles for itself (inside the cgroup): no shared cache.
        .envs(
            inner
                .get_envs()
                .filter(|(k, _)| !k.to_string_lossy().starts_with("ATOLL_PLUGIN_CACHE"))
                .filter_map(|(k, v)| Some((k, v?))),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let atoll = KillOnDrop(command.spawn().unwrap());
    let pid = atoll.0.id();
    let report = |step: &str| {
        eprintln!(
            "containment: {step}: atoll VmHWM {}, cgroup peak {} MiB of {} MiB, OOM kills {}",
            vm_hwm(pid),
            cgroup.peak() >> 20,
            LIMIT >> 20,
            cgroup.oom_kills()
        );
    };

    still_serves(&client, n, "before").await;
    // Text logs carry ANSI colours between a field's name and value.
    let log: String = std::fs::read_to_string(&log_path)
        .unwrap()
        .split('\x1b')
        .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
        .collect();
    assert!(
        log.contains("lowered plugin concurrency")
            && log.contains("memory_limit_mib=256")
            && log.contains("slots=2"),
        "atoll logs how it fitted its slots into 256 MiB:\n{log}"
    );
    report("started, one built-in Database Ready");

    // 8 Databases on a plugin touching 60 MiB per render, at once.
    plugin_configmap(
        &client,
        n,
        "hostile",
        "plugin.wasm",
        std::fs::read(HOSTILE).unwrap(),
    )
    .await;
    wait_for(
        "the hostile plugin to load",
        Duration::from_secs(120),
        || async {
            let api: Api<StoragePlugin> = Api::all(client.clone());
            let status = api.get("hostile").await.map_err(|e| e.to_string())?.status;
            match status.map(|s| s.state) {
                Some(s) if s == "Loaded" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let manifests: String = (0..8)
        .map(|i| database(&format!("touch-{i}"), "hostile", "{mode: touch, mib: 60}"))
        .collect::<Vec<_>>()
        .join("---\n");
    k(n, &["apply", "-f", "-"], Some(&manifests)).await;
    for i in 0..8 {
        wait_ready(&client, n, &format!("touch-{i}")).await;
    }
    still_serves(&client, n, "after-touch").await;
    report("8 Databases touching 60 MiB per render, all Ready");

    // A config-schema bomb (10,000 levels deep).
    let mut bomb = std::fs::read(BOMB).unwrap();
    let marker = b"ATOLL-BOMB-MODE:";
    let at = bomb
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap()
        + marker.len();
    bomb[at..at + 8].copy_from_slice(b"schemadp");
    plugin_configmap(&client, n, "contain-bomb", "plugin.wasm", bomb).await;
    let error = refused(&client, "contain-bomb").await;
    assert!(
        error.contains("levels deep") && error.contains("at most 64"),
        "{error}"
    );
    still_serves(&client, n, "after-bomb").await;
    report("schema bomb refused");

    // A multi-memory component.
    plugin_configmap(
        &client,
        n,
        "contain-multimem",
        "plugin.wasm",
        multi_memory_component(),
    )
    .await;
    let error = refused(&client, "contain-multimem").await;
    assert!(error.contains("multiple memories"), "{error}");
    still_serves(&client, n, "after-multimem").await;
    report("multi-memory component refused");

    // A component too large to compile (over 64 MiB inflated from gzip).
    let huge = gzip(&slow_component(640, 10_000)); // 70 MB
    plugin_configmap(&client, n, "contain-huge", "plugin.wasm.gz", huge).await;
    let error = refused(&client, "contain-huge").await;
    assert!(
        error.contains("decompresses to more than 64 MiB"),
        "{error}"
    );
    report("70 MB component refused before compiling");

    // A component slow and large to compile (58 MB of code, ~500 MB to
    // compile, more than the whole cgroup): the compiler process is stopped
    // (the OOM killer, which picks it first, or the deadline, whichever
    // comes first), never atoll.
    let slow = gzip(&slow_component(530, 10_000));
    eprintln!("containment: slow component gzip {} bytes", slow.len());
    plugin_configmap(&client, n, "contain-slow", "plugin.wasm.gz", slow).await;
    let error = refused(&client, "contain-slow").await;
    assert!(
        error.contains("compiler process") || error.contains("compiling took over"),
        "{error}"
    );
    still_serves(&client, n, "after-slow").await;
    report("slow component refused");

    let mut atoll = atoll;
    assert!(
        atoll.0.try_wait().unwrap().is_none(),
        "atoll is still running:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    // Text logs carry ANSI colours between a field's name and value.
    let log: String = std::fs::read_to_string(&log_path)
        .unwrap()
        .split('\x1b')
        .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
        .collect();
    assert!(
        log.contains("lowered plugin concurrency")
            && log.contains("memory_limit_mib=256")
            && log.contains("slots=2"),
        "atoll logs how it fitted its slots into 256 MiB:\n{log}"
    );
    assert!(cgroup.peak() <= LIMIT);
    // The OOM killer may have stopped the compiler child (that is its
    // job); atoll itself is alive, checked above.
    eprintln!(
        "containment: compiler children OOM-killed: {}; log lines {}",
        cgroup.oom_kills(),
        log.lines().count()
    );
    drop(atoll);
    drop(cgroup);
    ns.cleanup().await;
}
