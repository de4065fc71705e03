//! Plugins from a real OCI registry: the CNCF Distribution registries the
//! test environment runs (one anonymous, one with htpasswd basic auth).
//! Artifacts are pushed with atoll's own `oci::push` (the CNCF wasm layout);
//! what is checked is what a pull from the real registry returns and which
//! error a broken source gives. Each test pushes to a repository and tag of
//! its own, so reruns and parallel tests never see each other's artifacts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll::contract::Digest;
use atoll::plugin::oci::{self, Credentials, InsecurePolicy, OciError, Reference};
use atoll::plugin::{Limits, Runtime};
use atoll_e2e::padded;
use atoll_testenv::{Registries, TestNamespace, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};

/// Plugins up to this size pull; the padded component is larger than a
/// ConfigMap may be but under this.
const MAX_BYTES: u64 = 8 << 20;
/// What the API server allows a ConfigMap's data to hold.
const CONFIGMAP_LIMIT: usize = 1 << 20;

fn raft() -> &'static [u8] {
    atoll::plugin::builtin::BUILTIN
        .iter()
        .find(|(name, _)| *name == "raft")
        .map(|(_, bytes)| *bytes)
        .unwrap()
}

/// A repository and tag no other test or run uses.
fn reference(registry: &str, test: &str) -> Reference {
    let unique = atoll_e2e::unique_suffix();
    Reference::parse(&format!("{registry}/e2e/{test}:{unique}")).unwrap()
}

fn with(reference: &Reference, suffix: &str) -> Reference {
    let base = format!("{}/{}", reference.registry(), reference.repository());
    Reference::parse(&format!("{base}{suffix}")).unwrap()
}

async fn pull(
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<oci::Artifact, OciError> {
    oci::pull(
        reference,
        credentials,
        MAX_BYTES,
        &InsecurePolicy::default(),
    )
    .await
}

/// A `kubernetes.io/dockerconfigjson` Secret as `kubectl create secret
/// docker-registry` makes it, created on the API server and read back: the
/// credentials come from what Kubernetes stores, not from the test's variables.
async fn pull_secret(
    ns: &TestNamespace,
    name: &str,
    registry: &str,
    user: &str,
    password: &str,
) -> Vec<u8> {
    let client = atoll_testenv::client().await;
    let api: Api<Secret> = Api::namespaced(client, ns.name());
    let config = Credentials::Basic {
        user: user.into(),
        password: password.into(),
    }
    .to_docker_config_json(registry);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            oci::DOCKER_CONFIG_JSON_KEY.to_owned(),
            ByteString(config),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret).await.unwrap();
    let stored = api.get(name).await.unwrap();
    stored.data.unwrap()[oci::DOCKER_CONFIG_JSON_KEY].0.clone()
}

#[tokio::test]
async fn a_component_too_big_for_a_configmap_loads_by_tag_and_by_digest() {
    let Registries { anonymous, .. } = atoll_testenv::registries();
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "oci-big").await;
    let big = padded(raft(), 3 * CONFIGMAP_LIMIT / 2);
    assert_eq!(big.len(), 1_572_864);

    // The API server refuses it as a ConfigMap, which is why OCI exists here.
    let configmap = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("raft-big".into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            "plugin.wasm".into(),
            ByteString(big.clone()),
        )])),
        ..Default::default()
    };
    let refused = Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &configmap)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("1048576"), "{refused}");

    let tagged = reference(&anonymous, "big");
    let pushed = oci::push(&tagged, None, &big, &InsecurePolicy::default())
        .await
        .unwrap();
    let by_digest = with(&tagged, &format!("@{}", pushed.manifest_digest));
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let mut loaded = Vec::new();
    for reference in [&tagged, &by_digest] {
        let artifact = pull(reference, None).await.unwrap();
        assert!(artifact.bytes == big, "{reference}: other bytes");
        assert_eq!(artifact.digest, Digest::of(&big));
        assert_eq!(artifact.manifest_digest, pushed.manifest_digest);
        let plugin = oci::load(&runtime, &artifact).await.unwrap();
        assert_eq!(plugin.metadata().name, "raft");
        assert_eq!(plugin.digest(), Digest::of(&big));
        assert_eq!(plugin.size(), big.len());
        loaded.push(plugin);
    }
    // Both serve optimized code once the tier-up lands, and the second
    // load reused the first's (same digest): Cranelift compiled once.
    let optimized = || loaded.iter().all(|p| p.is_optimized());
    wait_for("the optimized code", Duration::from_secs(300), || async {
        optimized()
            .then_some(())
            .ok_or_else(|| "baseline code".to_string())
    })
    .await;
    assert_eq!(runtime.compilations(), 1);
    ns.cleanup().await;
}

#[tokio::test]
async fn the_authenticated_registry_takes_a_dockerconfigjson_pull_secret() {
    let registries = atoll_testenv::registries();
    let registry = registries.authenticated.as_str();
    let client = atoll_testenv::client().await;
    let ns = TestNamespace::new(&client, "oci-auth").await;
    let right = pull_secret(
        &ns,
        "right",
        registry,
        &registries.user,
        &registries.password,
    )
    .await;
    let wrong = pull_secret(&ns, "wrong", registry, &registries.user, "not-the-password").await;
    let right = Credentials::from_docker_config_json(&right, registry)
        .unwrap()
        .unwrap();
    let wrong = Credentials::from_docker_config_json(&wrong, registry)
        .unwrap()
        .unwrap();

    let tagged = reference(registry, "auth");
    let pushed = oci::push(&tagged, Some(&right), raft(), &InsecurePolicy::default())
        .await
        .unwrap();
    for reference in [
        tagged.clone(),
        with(&tagged, &format!("@{}", pushed.manifest_digest)),
    ] {
        let artifact = pull(&reference, Some(&right)).await.unwrap();
        assert_eq!(artifact.digest, Digest::of(raft()), "{reference}");
    }
    for credentials in [None, Some(&wrong)] {
        let err = pull(&tagged, credentials).await.unwrap_err();
        assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
        assert_eq!(err.reason(), "RegistryUnauthorized");
    }
    // Pushing with wrong credentials is refused too.
    let err = oci::push(
        &reference(registry, "auth"),
        Some(&wrong),
        raft(),
        &InsecurePolicy::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnauthorized", "{err}");
    ns.cleanup().await;
}

#[tokio::test]
async fn broken_sources_give_their_reason() {
    let Registries { anonymous, .. } = atoll_testenv::registries();
    let tagged = reference(&anonymous, "broken");
    let pushed = oci::push(&tagged, None, raft(), &InsecurePolicy::default())
        .await
        .unwrap();

    // Pinned to a digest the tag does not point at (and the repository lacks).
    let other = Digest::of(b"some other manifest");
    let tag = tagged.tag().unwrap();
    let mismatch = with(&tagged, &format!(":{tag}@{other}"));
    match pull(&mismatch, None).await.unwrap_err() {
        OciError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(
                (expected, actual),
                (other.to_string(), pushed.manifest_digest.to_string())
            );
        }
        err => panic!("{err:?}"),
    }

    // A tag, and a digest, the registry never had.
    for missing in [
        with(&tagged, ":never-pushed"),
        with(&tagged, &format!("@{other}")),
    ] {
        let err = pull(&missing, None).await.unwrap_err();
        assert_eq!(err.reason(), "ArtifactNotFound", "{missing}: {err}");
    }

    // Over the size limit: refused from the descriptor, before downloading.
    let err = oci::pull(&tagged, None, 1000, &InsecurePolicy::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::TooLarge { limit: 1000, size: Some(s) } if s == raft().len() as u64),
        "{err}"
    );

    // A container image's layout is not a plugin.
    let layer = oci::push_blob(&tagged, None, b"not a tarball", &InsecurePolicy::default())
        .await
        .unwrap();
    let config = oci::push_blob(&tagged, None, b"{}", &InsecurePolicy::default())
        .await
        .unwrap();
    let image = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": 13}],
    });
    let image_ref = with(&tagged, ":an-image");
    oci::push_manifest(
        &image_ref,
        None,
        image.to_string().as_bytes(),
        "application/vnd.oci.image.manifest.v1+json",
        &InsecurePolicy::default(),
    )
    .await
    .unwrap();
    let err = pull(&image_ref, None).await.unwrap_err();
    assert_eq!(err.reason(), "NotWasm", "{err}");

    // A registry that is down: a loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = Reference::parse(&format!("{closed}/e2e/broken:v1")).unwrap();
    let err = pull(&down, None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "RegistryUnavailable");
}

/// `atoll plugins push` checks the file is a plugin, pushes it with the
/// password from the environment, and prints what a pull then finds.
#[tokio::test]
async fn the_cli_pushes_what_a_pull_loads() {
    let registries = atoll_testenv::registries();
    let registry = registries.authenticated.as_str();
    let dir = std::env::temp_dir().join(format!("atoll-e2e-oci-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("raft.wasm");
    std::fs::write(&file, raft()).unwrap();
    let tagged = reference(registry, "cli");
    let out = tokio::process::Command::new(atoll_e2e::atoll_bin())
        .args(["plugins", "push", "--username", &registries.user])
        .arg(&file)
        .arg(tagged.to_string())
        .env("ATOLL_REGISTRY_PASSWORD", &registries.password)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let credentials = Credentials::Basic {
        user: registries.user.clone(),
        password: registries.password.clone(),
    };
    let artifact = pull(&tagged, Some(&credentials)).await.unwrap();
    assert_eq!(printed["digest"], Digest::of(raft()).to_string());
    assert_eq!(
        printed["manifestDigest"],
        artifact.manifest_digest.to_string()
    );
    assert_eq!(printed["name"], "raft");

    // A file that is not a plugin never reaches the registry.
    std::fs::write(&file, b"\0asm\x01\0\0\0").unwrap();
    let refused = reference(registry, "cli-refused");
    let out = tokio::process::Command::new(atoll_e2e::atoll_bin())
        .args(["plugins", "push", "--username", &registries.user])
        .arg(&file)
        .arg(refused.to_string())
        .env("ATOLL_REGISTRY_PASSWORD", &registries.password)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = pull(&refused, Some(&credentials)).await.unwrap_err();
    assert_eq!(err.reason(), "ArtifactNotFound", "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
