//! Registry tests: swaps, fall-backs, failures and versions side by side.
use std::sync::Arc;

use super::{Registry, Removal, Source};
use crate::contract::PluginDatabase;
use crate::plugin::{Limits, Runtime, builtin};

/// One runtime for every test: each component compiles once.
fn runtime() -> Arc<Runtime> {
    static RUNTIME: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    Arc::clone(RUNTIME.get_or_init(|| Arc::new(Runtime::new(Limits::default()).expect("engine"))))
}

fn raft_bytes() -> &'static [u8] {
    builtin::bytes("raft").expect("raft is built in")
}

fn configmap(name: &str) -> Source {
    Source::ConfigMap {
        namespace: "atoll-system".into(),
        name: name.into(),
    }
}

fn input() -> PluginDatabase {
    PluginDatabase {
        name: "db".into(),
        namespace: "ns".into(),
        uid: "u".into(),
        generation: 1,
        labels: Vec::new(),
        partitions: 3,
        config: r#"{"clusters": 1, "replicas": 1}"#.into(),
        cluster_domain: "cluster.local".into(),
    }
}

#[test]
fn a_swap_serves_the_new_plugin_while_holders_of_the_old_finish_on_it() {
    let registry = Registry::with_builtins(runtime()).expect("built-ins");
    let old = registry.get("raft").expect("raft");
    let new = registry
        .runtime()
        .load("configmap/atoll-system/raft-v2", raft_bytes())
        .expect("loads");
    let new = registry.insert(new, configmap("raft-v2"));

    let serving = registry.get("raft").expect("raft");
    assert!(Arc::ptr_eq(&serving, &new));
    assert!(!Arc::ptr_eq(&serving, &old));
    assert_eq!(
        registry.entry("raft").map(|e| e.source),
        Some(configmap("raft-v2"))
    );
    // A reconcile that rendered with the old version can still call it.
    let rendered = old.render(&input()).expect("no trap").expect("renders");
    assert_eq!(rendered.partitions.len(), 3);
}

#[test]
fn removing_an_override_falls_back_to_the_built_in_and_only_from_its_source() {
    let registry = Registry::with_builtins(runtime()).expect("built-ins");
    let builtin = registry.get("raft").expect("raft");
    let new = registry
        .runtime()
        .load("configmap/atoll-system/raft-v2", raft_bytes())
        .expect("loads");
    registry.insert(new, configmap("raft-v2"));

    assert!(matches!(
        registry.remove("raft", &configmap("someone-else")),
        Removal::NotServing
    ));
    assert_eq!(
        registry.entry("raft").map(|e| e.source),
        Some(configmap("raft-v2"))
    );
    match registry.remove("raft", &configmap("raft-v2")) {
        Removal::FellBack(p) => assert!(Arc::ptr_eq(&p, &builtin)),
        other => panic!("expected the built-in back, got {other:?}"),
    }
    assert_eq!(
        registry.entry("raft").map(|e| e.source),
        Some(Source::Builtin)
    );
    assert_eq!(registry.failure("raft"), None);
}

#[test]
fn a_removed_plugin_without_built_in_is_gone_with_a_reason_until_loaded_again() {
    let registry = Registry::new(runtime());
    let plugin = registry
        .runtime()
        .load("configmap/atoll-system/raft", raft_bytes())
        .expect("loads");
    registry.insert(plugin, configmap("raft"));
    assert!(matches!(
        registry.remove("raft", &configmap("raft")),
        Removal::Gone
    ));
    assert!(registry.get("raft").is_none());
    let failure = registry.failure("raft").expect("why it is gone");
    assert!(
        failure
            .error
            .contains("configmap/atoll-system/raft was deleted")
    );

    let again = registry
        .runtime()
        .load("configmap/atoll-system/raft", raft_bytes())
        .expect("loads");
    registry.insert(again, configmap("raft"));
    assert_eq!(registry.failure("raft"), None);
}

#[test]
fn a_failed_load_keeps_the_serving_plugin_and_is_cleared_only_by_its_source() {
    let registry = Registry::with_builtins(runtime()).expect("built-ins");
    let serving = registry.get("raft").expect("raft");
    let bad = registry
        .runtime()
        .load("configmap/atoll-system/raft-bad", b"not wasm");
    let error = bad.expect_err("not a component").to_string();
    let failure = super::Failure {
        source: configmap("raft-bad"),
        error,
    };
    registry.record_failure("raft", failure.clone());
    assert!(Arc::ptr_eq(&registry.get("raft").expect("raft"), &serving));
    assert_eq!(registry.failure("raft"), Some(failure.clone()));

    registry.clear_failure("raft", &configmap("another"));
    assert_eq!(registry.failure("raft"), Some(failure));
    registry.clear_failure("raft", &configmap("raft-bad"));
    assert_eq!(registry.failure("raft"), None);
}

/// A raft build with a different digest (the built-in bytes with a custom
/// section appended: same plugin, another component).
fn other_raft(registry: &Registry) -> Arc<crate::plugin::LoadedPlugin> {
    let mut bytes = raft_bytes().to_vec();
    // A custom section: id 0, size, name length, name, no payload.
    bytes.extend_from_slice(&[0, 5, 4, b't', b'e', b's', b't']);
    Arc::new(
        registry
            .runtime()
            .load("configmap/atoll-system/raft-v2", &bytes)
            .expect("loads"),
    )
}

#[test]
fn versions_live_side_by_side_and_each_database_chooses_one() {
    use super::{Unchosen, Wanted};
    let registry = Registry::with_builtins(runtime()).expect("built-ins");
    let builtin = registry.get("raft").expect("raft");
    let next = other_raft(&registry);
    assert_ne!(builtin.digest(), next.digest());

    // Added as a version: the default stays.
    assert!(!registry.add_version(Arc::clone(&next), configmap("raft-v2")));
    assert_eq!(registry.versions("raft").len(), 2);
    let default = Wanted::default();
    assert!(Arc::ptr_eq(
        &registry.choose("raft", default).unwrap(),
        &builtin
    ));

    // An assignment picks the other version; an unknown assignment falls
    // back to the default.
    let next_digest = next.digest().to_string();
    let assigned = Wanted {
        assigned: Some(&next_digest),
        ..Wanted::default()
    };
    assert!(Arc::ptr_eq(
        &registry.choose("raft", assigned).unwrap(),
        &next
    ));
    let stale = Wanted {
        assigned: Some("sha256:gone"),
        ..Wanted::default()
    };
    assert!(Arc::ptr_eq(
        &registry.choose("raft", stale).unwrap(),
        &builtin
    ));

    // A digest pin wins over an assignment, and says what is loaded when
    // its digest is not.
    let builtin_digest = builtin.digest().to_string();
    let pinned = Wanted {
        digest: Some(&builtin_digest),
        assigned: Some(&next_digest),
        requirement: None,
    };
    assert!(Arc::ptr_eq(
        &registry.choose("raft", pinned).unwrap(),
        &builtin
    ));
    let missing = Wanted {
        digest: Some("sha256:nope"),
        ..Wanted::default()
    };
    match registry.choose("raft", missing) {
        Err(Unchosen::DigestNotLoaded { loaded }) => {
            assert!(loaded.contains(&next_digest) && loaded.contains(&builtin_digest))
        }
        other => panic!("expected DigestNotLoaded, got {other:?}"),
    }

    // The default moves only when asked.
    assert!(registry.set_default("raft", &next_digest));
    assert!(Arc::ptr_eq(&registry.get("raft").unwrap(), &next));
    assert!(!registry.set_default("raft", "sha256:nope"));
    assert!(matches!(
        registry.choose("nope", Wanted::default()),
        Err(Unchosen::Unknown)
    ));
}

#[test]
fn a_requirement_keeps_a_satisfying_choice_else_takes_the_highest_match() {
    use super::{Unchosen, Wanted};
    let registry = Registry::with_builtins(runtime()).expect("built-ins");
    let builtin = registry.get("raft").expect("raft");
    let version = builtin.metadata().version.clone();
    let exact = semver::VersionReq::parse(&format!("={version}")).unwrap();
    let next = other_raft(&registry);
    registry.insert_arc(Arc::clone(&next), configmap("raft-v2"), None);
    // Both are the same plugin version: the default (next) satisfies.
    let wanted = Wanted {
        requirement: Some(&exact),
        ..Wanted::default()
    };
    assert!(Arc::ptr_eq(
        &registry.choose("raft", wanted).unwrap(),
        &next
    ));
    let none = semver::VersionReq::parse(">=99").unwrap();
    let wanted = Wanted {
        requirement: Some(&none),
        ..Wanted::default()
    };
    assert!(matches!(
        registry.choose("raft", wanted),
        Err(Unchosen::NoMatch { .. })
    ));
}

#[test]
fn a_managed_name_keeps_its_default_when_a_configmap_loads_and_removal_drops_only_its_versions() {
    let registry = Registry::with_builtins(runtime()).expect("built-ins");
    let builtin = registry.get("raft").expect("raft");
    registry.set_managed("raft", true);
    let next = other_raft(&registry);
    assert!(!registry.insert_arc(Arc::clone(&next), configmap("raft-v2"), None));
    assert!(Arc::ptr_eq(&registry.get("raft").unwrap(), &builtin));
    assert!(matches!(
        registry.remove("raft", &configmap("raft-v2")),
        Removal::Dropped
    ));
    assert_eq!(registry.versions("raft").len(), 1);
}
