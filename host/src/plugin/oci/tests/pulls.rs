//! Pulls (and pushes) against the fake registry.

use std::sync::Arc;

use super::super::*;
use super::fake::{self, Auth, Knobs, sha};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A tiny core module: the pull checks the magic bytes, not the contents.
fn wasm(len: usize) -> Vec<u8> {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.resize(len.max(8), 0);
    bytes
}

fn reference(addr: std::net::SocketAddr, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/plugins/raft{rest}")).unwrap()
}

async fn pull_default(r: &Reference, creds: Option<&Credentials>) -> Result<Artifact, OciError> {
    pull(r, creds, 1 << 20, &InsecurePolicy::default()).await
}

/// Stores an artifact directly (not through `push`) with the given layers.
fn store(fake: &fake::Fake, tag: &str, layers: &[(&str, &[u8])]) -> String {
    let config = fake.put_blob(b"{}");
    let layers: Vec<_> = layers
        .iter()
        .map(|(media_type, bytes)| {
            serde_json::json!({"mediaType": media_type, "digest": fake.put_blob(bytes), "size": bytes.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config, "size": 2},
        "layers": layers,
    });
    fake.put_manifest(Some(tag), OCI_MANIFEST, manifest.to_string().as_bytes())
}

#[tokio::test]
async fn push_then_pull_by_tag_and_digest() {
    let (fake, addr) = fake::start(Knobs::default()).await;
    let bytes = wasm(300_000);
    let pushed = push(
        &reference(addr, ":v1"),
        None,
        &bytes,
        &InsecurePolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(pushed.layer_digest.to_string(), sha(&bytes));
    // What was stored is the CNCF wasm artifact layout.
    let (media_type, manifest) = fake.manifests.lock().unwrap().get("v1").cloned().unwrap();
    assert_eq!(media_type, OCI_MANIFEST);
    assert_eq!(pushed.manifest_digest.to_string(), sha(&manifest));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["size"], 300_000);

    for text in [
        ":v1".to_owned(),
        format!("@{}", pushed.manifest_digest),
        format!(":v1@{}", pushed.manifest_digest),
    ] {
        let artifact = pull_default(&reference(addr, &text), None).await.unwrap();
        assert_eq!(artifact.bytes, bytes, "{text}");
        assert_eq!(artifact.digest.to_string(), sha(&bytes));
        assert_eq!(artifact.manifest_digest, pushed.manifest_digest);
        assert_eq!(artifact.pinned.digest(), Some(pushed.manifest_digest));
    }
}

#[tokio::test]
async fn older_wasm_layer_types_and_indexes_load() {
    let (fake, addr) = fake::start(Knobs::default()).await;
    let bytes = wasm(64);
    let inner = store(
        &fake,
        "inner",
        &[("application/vnd.wasm.content.layer.v1+wasm", &bytes)],
    );
    let artifact = pull_default(&reference(addr, ":inner"), None)
        .await
        .unwrap();
    assert_eq!(artifact.bytes, bytes);
    let linux = store(
        &fake,
        "linux",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", b"tar")],
    );
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": linux, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": inner, "size": 1, "platform": {"architecture": "wasm", "os": "wasip2"}},
        ],
    });
    fake.put_manifest(
        Some("multi"),
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    let artifact = pull_default(&reference(addr, ":multi"), None)
        .await
        .unwrap();
    assert_eq!(artifact.bytes, bytes);
    assert_eq!(artifact.manifest_digest.to_string(), inner);
}

#[tokio::test]
async fn what_is_not_one_wasm_layer_is_refused() {
    let (fake, addr) = fake::start(Knobs::default()).await;
    store(
        &fake,
        "image",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", b"tar")],
    );
    store(
        &fake,
        "two",
        &[
            ("application/wasm", &wasm(10)),
            ("application/wasm", &wasm(11)),
        ],
    );
    store(&fake, "text", &[("application/wasm", b"not wasm at all")]);
    for tag in ["image", "two", "text"] {
        let err = pull_default(&reference(addr, &format!(":{tag}")), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "NotWasm", "{tag}: {err}");
    }
    fake.put_manifest(Some("junk"), OCI_MANIFEST, b"{not json");
    let err = pull_default(&reference(addr, ":junk"), None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "BadManifest", "{err}");
}

#[tokio::test]
async fn missing_artifacts_are_not_found() {
    let (fake, addr) = fake::start(Knobs::default()).await;
    let err = pull_default(&reference(addr, ":absent"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    let err = pull_default(
        &reference(addr, &format!("@sha256:{}", "0".repeat(64))),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "ArtifactNotFound", "{err}");
    // A manifest whose layer blob is gone.
    store(&fake, "v1", &[("application/wasm", &wasm(20))]);
    fake.blobs.lock().unwrap().clear();
    let err = pull_default(&reference(addr, ":v1"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wasm layer"), "{err}");
    assert_eq!(err.reason(), "ArtifactNotFound");
}

#[tokio::test]
async fn digests_are_verified() {
    let (fake, addr) = fake::start(Knobs::default()).await;
    let bytes = wasm(1000);
    let v1 = store(&fake, "v1", &[("application/wasm", &bytes)]);
    let v2 = store(&fake, "v2", &[("application/wasm", &wasm(999))]);
    // The tag moved away from the pinned digest, which the repository no longer has.
    fake.manifests.lock().unwrap().remove(&v1);
    let pinned = reference(addr, &format!(":v2@{v1}"));
    let err = pull_default(&pinned, None).await.unwrap_err();
    match &err {
        OciError::DigestMismatch {
            expected, actual, ..
        } => assert_eq!((expected, actual), (&v1, &v2)),
        other => panic!("{other:?}"),
    }
    // A registry serving another manifest than the digest asked for.
    fake.knobs.lock().unwrap().lying_manifest =
        Some(fake.manifests.lock().unwrap()["v1"].1.clone());
    let err = pull_default(&reference(addr, &format!("@{v2}")), None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "DigestMismatch", "{err}");
    // A blob of the right size with other bytes, and one longer than its descriptor.
    fake.knobs.lock().unwrap().lying_manifest = None;
    let mut tampered = bytes.clone();
    tampered[500] ^= 1;
    fake.knobs.lock().unwrap().tampered_blob = Some(tampered);
    let err = pull_default(&reference(addr, ":v1"), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&sha(&bytes)) && err.reason() == "DigestMismatch",
        "{err}"
    );
    fake.knobs.lock().unwrap().tampered_blob = Some(wasm(500_000));
    let err = pull_default(&reference(addr, ":v1"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
}

#[tokio::test]
async fn the_size_limit_applies_before_and_while_downloading() {
    let (fake, addr) = fake::start(Knobs::default()).await;
    store(&fake, "big", &[("application/wasm", &wasm(10_000))]);
    let r = reference(addr, ":big");
    let err = pull(&r, None, 9_999, &InsecurePolicy::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooLarge {
                limit: 9_999,
                size: Some(10_000)
            }
        ),
        "{err}"
    );
    assert!(
        pull(&r, None, 10_000, &InsecurePolicy::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn basic_auth() {
    let (_, addr) = fake::start(Knobs {
        auth: Auth::Basic("alice".into(), "s3cret".into()),
        ..Knobs::default()
    })
    .await;
    let right = Credentials::Basic {
        user: "alice".into(),
        password: "s3cret".into(),
    };
    let wrong = Credentials::Basic {
        user: "alice".into(),
        password: "nope".into(),
    };
    let r = reference(addr, ":v1");
    let pushed = push(&r, Some(&right), &wasm(100), &InsecurePolicy::default())
        .await
        .unwrap();
    assert_eq!(
        pull_default(&r, Some(&right))
            .await
            .unwrap()
            .manifest_digest,
        pushed.manifest_digest
    );
    let err = pull_default(&r, None).await.unwrap_err();
    assert!(
        err.to_string().contains("pull Secret") && err.reason() == "RegistryUnauthorized",
        "{err}"
    );
    let err = pull_default(&r, Some(&wrong)).await.unwrap_err();
    assert!(
        err.to_string().contains("with the given credentials"),
        "{err}"
    );
    assert!(!err.to_string().contains("nope"));
}

#[tokio::test]
async fn bearer_tokens_come_from_the_realm() {
    let (fake, addr) = fake::start(Knobs {
        auth: Auth::Bearer("bob".into(), "hunter2".into()),
        ..Knobs::default()
    })
    .await;
    let right = Credentials::Basic {
        user: "bob".into(),
        password: "hunter2".into(),
    };
    let r = reference(addr, ":v1");
    push(&r, Some(&right), &wasm(100), &InsecurePolicy::default())
        .await
        .unwrap();
    fake.scopes.lock().unwrap().clear();
    pull_default(&r, Some(&right)).await.unwrap();
    assert_eq!(
        *fake.scopes.lock().unwrap(),
        ["scope=repository%3Aplugins%2Fraft%3Apull&service=fake"]
    );
    let wrong = Credentials::Basic {
        user: "bob".into(),
        password: "x".into(),
    };
    let err = pull_default(&r, Some(&wrong)).await.unwrap_err();
    assert!(err.to_string().contains("token endpoint"), "{err}");
    assert_eq!(err.reason(), "RegistryUnauthorized");
}

#[tokio::test]
async fn redirected_downloads_carry_no_credentials() {
    let (storage, storage_addr) = fake::start(Knobs::default()).await;
    let (fake, addr) = fake::start(Knobs {
        auth: Auth::Basic("u".into(), "p".into()),
        redirect_blobs_to: Some(storage_addr),
        ..Knobs::default()
    })
    .await;
    let bytes = wasm(5000);
    store(&fake, "v1", &[("application/wasm", &bytes)]);
    storage.put_blob(&bytes);
    let creds = Credentials::Basic {
        user: "u".into(),
        password: "p".into(),
    };
    let artifact = pull_default(&reference(addr, ":v1"), Some(&creds))
        .await
        .unwrap();
    assert_eq!(artifact.bytes, bytes);
    assert_eq!(*storage.redirected_auth.lock().unwrap(), [None]);
}

#[tokio::test]
async fn unavailable_registries() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = pull_default(&reference(closed, ":v1"), None)
        .await
        .unwrap_err();
    assert!(
        err.is_transient() && err.reason() == "RegistryUnavailable",
        "{err}"
    );
    assert!(err.to_string().contains("refused"), "{err}");
    // An overloaded registry.
    let (_, addr) = fake::start(Knobs {
        fail_with: Some(503),
        ..Knobs::default()
    })
    .await;
    let err = pull_default(&reference(addr, ":v1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable", "{err}");
    // A registry that refuses the request is not transient.
    let (_, addr) = fake::start(Knobs {
        fail_with: Some(400),
        ..Knobs::default()
    })
    .await;
    let err = pull_default(&reference(addr, ":v1"), None)
        .await
        .unwrap_err();
    assert!(
        !err.is_transient() && err.reason() == "RegistryError",
        "{err}"
    );
    // HTTPS to a plain-HTTP registry when loopback is not insecure.
    let err = pull(
        &reference(addr, ":v1"),
        None,
        100,
        &InsecurePolicy::strict(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable", "{err}");
}

#[tokio::test]
async fn a_pulled_component_loads_like_a_configmap_one() {
    let raft = crate::plugin::builtin::bytes("raft").unwrap();
    let (_, addr) = fake::start(Knobs::default()).await;
    let r = reference(addr, ":v1");
    push(&r, None, raft, &InsecurePolicy::default())
        .await
        .unwrap();
    let artifact = pull_default(&r, None).await.unwrap();
    let runtime = Arc::new(crate::plugin::Runtime::new(crate::plugin::Limits::default()).unwrap());
    let plugin = load(&runtime, &artifact).await.unwrap();
    assert_eq!(plugin.metadata().name, "raft");
    assert_eq!(plugin.digest(), artifact.digest);
    // Bytes that are wasm but not a plugin fail as they would from a ConfigMap.
    let bad = Artifact {
        bytes: wasm(8),
        ..artifact
    };
    let err = load(&runtime, &bad).await.unwrap_err().to_string();
    assert!(err.starts_with("oci 127.0.0.1"), "{err}");
}
