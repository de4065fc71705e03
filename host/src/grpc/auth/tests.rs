use std::collections::BTreeSet;

use tonic::{Code, Request};

use super::*;

/// A client for an API server that is not there: the paths tested here
/// must decide without asking it.
fn nowhere() -> Client {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    Client::try_from(config).unwrap()
}

fn with_header(value: &str) -> Credentials {
    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    Credentials::of(&request)
}

#[test]
fn bearer_tokens_are_read_and_other_schemes_refused() {
    assert_eq!(with_header("Bearer abc"), Credentials::Bearer("abc".into()));
    assert_eq!(
        with_header("bearer  abc "),
        Credentials::Bearer("abc".into())
    );
    assert!(matches!(
        with_header("Basic dXNlcg=="),
        Credentials::Malformed(_)
    ));
    assert!(matches!(with_header("Bearer "), Credentials::Malformed(_)));
    assert_eq!(Credentials::of(&Request::new(())), Credentials::None);
}

#[tokio::test]
async fn anonymous_callers_act_only_in_the_listed_namespaces() {
    let auth = Auth::new(nowhere(), AuthConfig::kubernetes(["legacy"]));
    let none = Credentials::None;
    auth.check(&none, Access::new("create", "members", "legacy"))
        .await
        .unwrap();
    let refused = auth
        .check(&none, Access::new("create", "members", "other"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("in namespace other"),
        "{}",
        refused.message()
    );
    assert!(
        refused
            .message()
            .contains("only legacy (--grpc-anonymous-namespaces)"),
        "{}",
        refused.message()
    );
    // Cluster-scoped resources are nobody's namespace.
    let plugins = auth
        .check(&none, Access::cluster("list", "storageplugins"))
        .await
        .unwrap_err();
    assert_eq!(plugins.code(), Code::Unauthenticated);
    // Lists across namespaces see the listed ones only.
    let scope = auth.scope(&none, "list", "databases").await.unwrap();
    assert_eq!(scope, Scope::Only(BTreeSet::from(["legacy".to_string()])));
    assert!(scope.includes("legacy") && !scope.includes("other"));
}

#[tokio::test]
async fn without_the_flag_anonymous_callers_are_refused_naming_it() {
    let auth = Auth::new(nowhere(), AuthConfig::kubernetes(Vec::<String>::new()));
    let refused = auth
        .check(&Credentials::None, Access::new("get", "databases", "shop"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("without --grpc-anonymous-namespaces"),
        "{}",
        refused.message()
    );
    let list = auth
        .scope(&Credentials::None, "list", "databases")
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::Unauthenticated);
    let malformed = auth
        .check(
            &Credentials::Malformed("bad header".into()),
            Access::new("get", "databases", "shop"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (malformed.code(), malformed.message()),
        (Code::Unauthenticated, "bad header")
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_not_a_refusal() {
    let auth = Auth::new(nowhere(), AuthConfig::kubernetes(Vec::<String>::new()));
    let err = auth
        .check(
            &Credentials::Bearer("t".into()),
            Access::new("get", "databases", "shop"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
}

#[tokio::test]
async fn disabled_checks_nothing() {
    let auth = Auth::new(nowhere(), AuthConfig::disabled());
    auth.check(
        &Credentials::None,
        Access::cluster("list", "storageplugins"),
    )
    .await
    .unwrap();
    assert_eq!(
        auth.scope(&Credentials::None, "list", "databases")
            .await
            .unwrap(),
        Scope::All
    );
}

#[test]
fn refusals_use_the_words_of_rbac() {
    let denied = Access::new("create", "members", "b").refused("system:serviceaccount:a:app");
    assert!(
        denied.starts_with(
            "User \"system:serviceaccount:a:app\" cannot create resource \"members\" in API group \"atoll.dev\" in the namespace \"b\""
        ),
        "{denied}"
    );
    assert!(
        denied.contains(
            "kubectl auth can-i create members.atoll.dev -n b --as system:serviceaccount:a:app"
        ),
        "{denied}"
    );
    let cluster = Access::cluster("list", "databases").refused("alice");
    assert!(
        cluster.contains("at the cluster scope") && cluster.contains("--all-namespaces"),
        "{cluster}"
    );
}
