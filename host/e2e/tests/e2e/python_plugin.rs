//! The Python port of the cache plugin (guest-sdk/python/examples/cache),
//! shipped the way its 18 MB calls for: pushed to a real OCI registry (CNCF
//! Distribution, from the test environment) and declared in the `cache`
//! StoragePlugin's spec, as a user would. It reconciles a Database to Ready
//! and hot-reloads to a new version referenced by digest; then a digest
//! mismatch, a missing artifact and a registry that is down each leave the
//! serving version in place with the reason on the StoragePlugin.
//!
//! The component comes from `$ATOLL_PYTHON_CACHE_WASM` (CI builds it with
//! `scripts/python-sdk.sh build`), else this test builds it with that script.
//! Compiling it takes a minute or more, so both versions are compiled in the
//! operator's runtime before the test takes the StoragePlugin records for
//! itself (the `cache` spec is cluster-scoped and every plugin-loading atoll
//! of the suite would follow it).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use atoll::api::{Database, StoragePlugin, StoragePluginStatus};
use atoll::contract::Digest;
use atoll::plugin::oci::{self, InsecurePolicy, Reference};
use atoll_e2e::{
    Operator, ResetPlugin, example, k, padded, plugin_records_exclusive, plugin_source_config,
    ready_on, workspace,
};
use atoll_testenv::{Registries, TestNamespace, wait_for};
use kube::api::Api;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn python_cache() -> PathBuf {
    if let Some(path) = std::env::var_os("ATOLL_PYTHON_CACHE_WASM") {
        return PathBuf::from(path);
    }
    let out = target_dir().join("python/cache.wasm");
    let status = Command::new(workspace().join("scripts/python-sdk.sh"))
        .args(["build", "guest-sdk/python/examples/cache"])
        .arg(&out)
        .current_dir(workspace())
        .status()
        .expect("scripts/python-sdk.sh runs");
    assert!(
        status.success(),
        "building the Python cache port failed (python3 >= 3.11 and PyPI, or set ATOLL_PYTHON_CACHE_WASM)"
    );
    out
}

/// Apply the `cache` StoragePlugin's spec: `versions` as (name, OCI
/// reference), and `target`.
async fn declare(ns: &str, versions: &[(&str, &str)], target: &str) {
    let versions: String = versions
        .iter()
        .map(|(name, reference)| {
            format!("  - name: {name}\n    source: {{oci: {{reference: \"{reference}\"}}}}\n")
        })
        .collect();
    let yaml = format!(
        "apiVersion: atoll.dev/v1alpha1\nkind: StoragePlugin\nmetadata:\n  name: cache\nspec:\n  versions:\n{versions}  target: {target}\n"
    );
    k(ns, &["apply", "-f", "-"], Some(&yaml)).await;
}

async fn record(client: &kube::Client) -> StoragePluginStatus {
    let api: Api<StoragePlugin> = Api::all(client.clone());
    api.get("cache")
        .await
        .ok()
        .and_then(|sp| sp.status)
        .unwrap_or_default()
}

async fn wait_on(client: &kube::Client, ns: &str, digest: &str) -> Database {
    let api: Api<Database> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("sessions Ready on {digest}"),
        Duration::from_secs(180),
        || async {
            let db = api.get("sessions").await.map_err(|e| e.to_string())?;
            if ready_on(&db, digest) {
                Ok(db)
            } else {
                Err(format!("{:?}", db.status))
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_python_cache_port_ships_by_oci_reloads_and_outlives_broken_sources() {
    let v1 = std::fs::read(python_cache()).unwrap();
    // The next release: the same code under another digest.
    let v2 = padded(&v1, v1.len() + 4096);
    let (d1, d2) = (Digest::of(&v1).to_string(), Digest::of(&v2).to_string());

    let Registries { anonymous, .. } = atoll_testenv::registries();
    let unique = atoll_e2e::unique_suffix();
    let repository = format!("{anonymous}/e2e/python-cache");
    let by_tag = format!("{repository}:{unique}-v1");
    let insecure = InsecurePolicy::default();
    oci::push(&Reference::parse(&by_tag).unwrap(), None, &v1, &insecure)
        .await
        .unwrap();
    let tag2 = Reference::parse(&format!("{repository}:{unique}-v2")).unwrap();
    let pushed = oci::push(&tag2, None, &v2, &insecure).await.unwrap();
    let by_digest = format!("{repository}@{}", pushed.manifest_digest);

    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "python-oci").await;
    let n = ns.name();
    let config = plugin_source_config(n);
    let renderer = config
        .plugins
        .renderer_with(&config.cluster_domain, config.policy.clone())
        .expect("the built-in plugins load");
    // Both versions compiled, in parallel, into the runtime the operator's
    // loads will find them in (keyed by digest).
    let runtime = Arc::clone(renderer.registry.runtime());
    let compiles: Vec<_> = [v1.clone(), v2]
        .into_iter()
        .map(|bytes| {
            let runtime = Arc::clone(&runtime);
            tokio::task::spawn_blocking(move || {
                runtime
                    .load("the Python cache port", &bytes)
                    .map(|p| p.metadata().name.clone())
            })
        })
        .collect();
    for compile in compiles {
        let name = compile.await.unwrap().expect("the Python component loads");
        assert_eq!(name, "cache");
    }

    let _records = plugin_records_exclusive().await;
    ResetPlugin::now(&client, "cache").await;
    let _reset = ResetPlugin("cache");
    let op = Operator::start_config(&client, config, renderer).await;

    // Shipped by tag: the Database renders with the Python component.
    declare(n, &[("py1", &by_tag)], "py1").await;
    k(n, &["apply", "-f", "-"], Some(&example("cache"))).await;
    let db = wait_on(&client, n, &d1).await;
    let status = db.status.unwrap();
    assert_eq!(status.plugin.as_ref().unwrap().name, "cache");
    assert_eq!(status.partitions.len(), 4);
    assert!(status.partitions.iter().all(|p| p.ready));

    // Hot reload to the next release, by digest, with atoll running.
    let both = [("py1", by_tag.as_str()), ("py2", by_digest.as_str())];
    declare(n, &both, "py2").await;
    wait_on(&client, n, &d2).await;
    // The record is written after the rollout's status, in a request of its
    // own, so it may trail the Database by that request: wait for it.
    wait_for(
        "the record names py2 the default and lists both versions",
        Duration::from_secs(30),
        || async {
            let plugin = record(&client).await;
            let named: Vec<(&str, &str)> = plugin
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.digest.as_str()))
                .collect();
            (plugin.digest == d2
                && named.contains(&("py1", d1.as_str()))
                && named.contains(&("py2", d2.as_str())))
            .then_some(())
            .ok_or(format!("{plugin:?}"))
        },
    )
    .await;

    // Broken sources, each as the target: nothing that serves changes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let other = Digest::of(b"no such manifest");
    for (what, reference, reason) in [
        (
            "a digest mismatch",
            format!("{repository}:{unique}-v1@{other}"),
            "DigestMismatch",
        ),
        (
            "a missing artifact",
            format!("{repository}:{unique}-never-pushed"),
            "ArtifactNotFound",
        ),
        (
            "a registry that is down",
            format!("{closed}/e2e/python-cache:v3"),
            "RegistryUnavailable",
        ),
    ] {
        declare(n, &[both[0], both[1], ("py3", &reference)], "py3").await;
        let plugin = wait_for(
            &format!("{what} on the StoragePlugin"),
            Duration::from_secs(60),
            || async {
                let plugin = record(&client).await;
                let error = plugin.last_error.clone().unwrap_or_default();
                (plugin.state == "Failed" && error.contains(&reference) && error.contains(reason))
                    .then_some(plugin.clone())
                    .ok_or(format!("{} {error}", plugin.state))
            },
        )
        .await;
        let error = plugin.last_error.unwrap();
        assert!(error.contains("spec.versions \"py3\""), "{what}: {error}");
        assert_eq!(plugin.digest, d2, "{what}: the serving version stays");
        let db = Api::<Database>::namespaced(client.clone(), n)
            .get("sessions")
            .await
            .unwrap();
        assert!(
            ready_on(&db, &d2),
            "{what}: the Database stays on py2: {:?}",
            db.status
        );
    }
    // Events of a cluster-scoped object land in `default`.
    let events = atoll_testenv::kubectl(
        &[
            "get",
            "events",
            "--all-namespaces",
            "--field-selector",
            "involvedObject.kind=StoragePlugin,involvedObject.name=cache,reason=VersionFailed",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    )
    .await
    .stdout;
    // The recorder folds repeats of one reason into a series: the first
    // failure's note is what stays.
    assert!(
        events.contains(&format!(
            "{repository}:{unique}-v1@{other} (DigestMismatch)"
        )),
        "an Event says why: {events}"
    );

    // The broken version removed: the failure is cleared from the record.
    declare(n, &both, "py2").await;
    wait_for("the failure cleared", Duration::from_secs(60), || async {
        let plugin = record(&client).await;
        (plugin.state == "Loaded" && plugin.last_error.is_none())
            .then_some(())
            .ok_or(format!("{} {:?}", plugin.state, plugin.last_error))
    })
    .await;
    op.stop().await;
    ns.cleanup().await;
}
