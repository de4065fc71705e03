//! The OCI client against an in-process registry ([`fake`]): reference,
//! pull Secret and challenge parsing, then pulls that succeed and pulls that
//! must fail with the right [`OciError`].

mod fake;

use std::sync::Arc;

use super::auth::{Challenge, parse_challenge};
use super::*;
use fake::{Auth, Knobs, sha};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn part_of(text: &str) -> &'static str {
    match Reference::parse(text) {
        Err(OciError::InvalidReference { part, .. }) => part,
        other => panic!("{text}: expected InvalidReference, got {other:?}"),
    }
}

#[test]
fn references_parse_as_docker_does() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let cases = [
        (
            "127.0.0.1:5000/plugins/raft:v1",
            "127.0.0.1:5000",
            "plugins/raft",
            Some("v1"),
            false,
        ),
        (
            "localhost/raft:1.2.3",
            "localhost",
            "raft",
            Some("1.2.3"),
            false,
        ),
        (
            "ghcr.io/atoll-dev/raft:latest",
            "ghcr.io",
            "atoll-dev/raft",
            Some("latest"),
            false,
        ),
        ("raft:v1", "docker.io", "library/raft", Some("v1"), false),
        (
            "someone/raft:v1",
            "docker.io",
            "someone/raft",
            Some("v1"),
            false,
        ),
        (
            "[::1]:5000/a/b_c__d.e--f:T_1",
            "[::1]:5000",
            "a/b_c__d.e--f",
            Some("T_1"),
            false,
        ),
    ];
    for (text, registry, repository, tag, _) in cases {
        let r = Reference::parse(text).unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            (registry, repository, tag, None),
            "{text}"
        );
    }
    let pinned = Reference::parse(&format!("reg.io/x@{digest}")).unwrap();
    assert_eq!(pinned.digest().unwrap().to_string(), digest);
    assert_eq!(pinned.tag(), None);
    let both = Reference::parse(&format!("reg.io:443/x:v2@{digest}")).unwrap();
    assert_eq!(
        (both.tag(), both.digest().map(|d| d.to_string())),
        (Some("v2"), Some(digest.clone()))
    );
    assert_eq!(both.to_string(), format!("reg.io:443/x:v2@{digest}"));
    assert_eq!(
        Reference::parse("raft:v1").unwrap().api_host(),
        "registry-1.docker.io"
    );
}

#[test]
fn bad_references_name_the_part() {
    assert_eq!(part_of("reg.io/raft"), "tag"); // no tag nor digest
    assert_eq!(part_of("reg.io/Raft:v1"), "repository");
    assert_eq!(part_of("reg.io/ra__-ft:v1"), "repository");
    assert_eq!(part_of("reg.io//raft:v1"), "repository");
    assert_eq!(part_of("reg.io/raft-:v1"), "repository");
    assert_eq!(part_of("reg.io/raft:-v1"), "tag");
    assert_eq!(part_of("reg.io/raft:v1!"), "tag");
    assert_eq!(part_of("reg.io/raft@sha256:abc"), "digest");
    assert_eq!(
        part_of(&format!("reg.io/raft@sha512:{}", "a".repeat(128))),
        "digest"
    );
    assert_eq!(
        part_of(&format!("reg.io/raft@sha256:{}", "A".repeat(64))),
        "digest"
    );
    assert_eq!(part_of("reg.io:0/raft:v1"), "registry");
    assert_eq!(part_of("reg.io:99999/raft:v1"), "registry");
    assert_eq!(part_of("re$g.io/raft:v1"), "registry");
    assert_eq!(part_of("https://reg.io/raft:v1"), "registry");
    assert_eq!(part_of(""), "repository");
    let err = Reference::parse("reg.io/raft").unwrap_err().to_string();
    assert!(
        err.contains("`reg.io/raft`") && err.contains(":TAG"),
        "{err}"
    );
}

#[test]
fn pull_secrets_pick_the_registry() {
    let json = br#"{"auths":{
        "https://index.docker.io/v1/":{"auth":"aHViOmh1YnBhc3M="},
        "reg.example.com:5000":{"username":"u","password":"p:w"},
        "http://other.io/v2/":{"auth":"b3RoZXI6c2VjcmV0OndpdGg6Y29sb25z"}
    }}"#;
    let get = |r: &str| Credentials::from_docker_config_json(json, r).unwrap();
    let basic = |u: &str, p: &str| {
        Some(Credentials::Basic {
            user: u.into(),
            password: p.into(),
        })
    };
    assert_eq!(get("docker.io"), basic("hub", "hubpass"));
    assert_eq!(get("reg.example.com:5000"), basic("u", "p:w"));
    assert_eq!(get("other.io"), basic("other", "secret:with:colons"));
    assert_eq!(get("reg.example.com"), None); // another port is another registry
    // What `to_docker_config_json` writes reads back.
    let creds = Credentials::Basic {
        user: "me".into(),
        password: "pw".into(),
    };
    let written = creds.to_docker_config_json("127.0.0.1:5001");
    assert_eq!(
        Credentials::from_docker_config_json(&written, "127.0.0.1:5001").unwrap(),
        Some(creds.clone())
    );
    assert!(!format!("{creds:?}").contains("pw"));
    for bad in [
        &b"not json"[..],
        br#"{"auths":{"r.io":{"auth":"!!!"}}}"#,
        br#"{"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}}"#,
        br#"{"auths":{"r.io":{"username":"only"}}}"#,
    ] {
        let err = Credentials::from_docker_config_json(bad, "r.io").unwrap_err();
        assert_eq!(err.reason(), "InvalidPullSecret", "{err}");
    }
}

#[test]
fn challenges_parse() {
    assert_eq!(
        parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
        )
        .unwrap(),
        Challenge::Bearer {
            realm: "https://auth.example/token".into(),
            service: Some("registry.example".into()),
            scope: Some("repository:a/b:pull,push".into()),
        }
    );
    assert_eq!(
        parse_challenge(r#"bearer realm=https://t.example/token , service="a\"b""#).unwrap(),
        Challenge::Bearer {
            realm: "https://t.example/token".into(),
            service: Some("a\"b".into()),
            scope: None,
        }
    );
    assert_eq!(
        parse_challenge(r#"Basic realm="Registry Realm""#).unwrap(),
        Challenge::Basic
    );
    assert!(
        parse_challenge(r#"Bearer service="x""#)
            .unwrap_err()
            .contains("no realm")
    );
    assert!(
        parse_challenge(r#"Bearer realm="open"#)
            .unwrap_err()
            .contains("unterminated")
    );
    assert!(
        parse_challenge("Negotiate abc")
            .unwrap_err()
            .contains("Negotiate")
    );
}

#[test]
fn insecure_policy() {
    let default = InsecurePolicy::default();
    for host in [
        "127.0.0.1:5000",
        "localhost",
        "LOCALHOST:80",
        "[::1]:5000",
        "127.1.2.3",
    ] {
        assert!(default.allows_http(host), "{host}");
    }
    for host in ["10.0.0.1:5000", "reg.io", "localhost.evil.com"] {
        assert!(!default.allows_http(host), "{host}");
    }
    assert!(!InsecurePolicy::strict().allows_http("127.0.0.1:5000"));
    let listed = InsecurePolicy {
        loopback: false,
        hosts: vec!["reg.lan".into(), "other.lan:5000".into()],
    };
    assert!(listed.allows_http("reg.lan:1234") && listed.allows_http("other.lan:5000"));
    assert!(!listed.allows_http("other.lan:5001"));
}

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
    let raft = crate::plugin::builtin::BUILTIN
        .iter()
        .find(|(name, _)| *name == "raft")
        .map(|(_, bytes)| *bytes)
        .unwrap();
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
