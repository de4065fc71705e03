//! References, pull Secrets, `WWW-Authenticate` challenges and the insecure policy.

use super::super::auth::{Challenge, parse_challenge};
use super::super::*;

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
