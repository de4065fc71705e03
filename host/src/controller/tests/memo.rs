//! Scenarios of the render memo: plugin calls saved on unchanged inputs,
//! and a hot reload's shadow render reused by the reconcile after the swap.

use std::sync::Arc;

use serde_json::json;

use super::{NS, converged, reconcile, renderer, stored, summary, writes};
use crate::controller::Context;
use crate::plugin::Registry;
use crate::policy::OutputPolicy;
use crate::render::Renderer;

/// `(render, status)` sample of `family` for raft in `ctx`'s metrics.
fn plugin_counts(ctx: &Context, family: &str) -> (u64, u64) {
    let text = ctx.metrics.encode();
    let count = |function: &str| {
        let prefix = format!("{family}{{plugin=\"raft\",function=\"{function}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.parse().expect("a count"))
    };
    (count("render"), count("status"))
}

#[tokio::test]
async fn an_unchanged_input_calls_no_plugin_and_an_edit_renders_again() {
    let (api, db) = converged().await;
    let ctx = Arc::new(Context::new(api.client(), renderer()));
    let calls = "atoll_plugin_call_duration_seconds_count";
    let memoized = "atoll_plugin_calls_memoized_total";
    for _ in 0..3 {
        reconcile(Arc::new(stored(&api, &db)), Arc::clone(&ctx))
            .await
            .expect("the reconcile finishes");
    }
    // The first reconcile calls render and status; the children did not
    // change since, so the next two are answered from the memo.
    assert_eq!(plugin_counts(&ctx, calls), (1, 1));
    assert_eq!(plugin_counts(&ctx, memoized), (2, 2));
    assert!(writes(&api).is_empty(), "{:?}", summary(&writes(&api)));

    // A spec edit (new generation, new config) is a new input.
    let mut edited = stored(&api, &db);
    edited.metadata.generation = Some(2);
    edited.spec.storage.config = Some(json!({"clusters": 1, "replicas": 3}));
    reconcile(Arc::new(edited), Arc::clone(&ctx))
        .await
        .expect("the reconcile finishes");
    assert_eq!(plugin_counts(&ctx, calls).0, 2, "the edit renders again");
    assert!(!writes(&api).is_empty(), "and applies what changed");
}

/// A hot reload's shadow render goes through the controller's memo: the
/// serving version's answer is found there, and the new version's answer
/// is kept for the reconcile the swap requeues, which calls no plugin.
#[tokio::test]
async fn a_reload_renders_each_database_once_with_the_new_version() {
    use crate::plugin::Source;
    use crate::plugin::source::ShadowRenderer;
    let calls = "atoll_plugin_call_duration_seconds_count";
    let (api, db) = converged().await;
    let db = stored(&api, &db);
    // A registry of its own: the swap must not reach other scenarios.
    let shared = renderer();
    let runtime = Arc::clone(shared.registry.runtime());
    let serving = shared.registry.get("raft").expect("raft is built in");
    let registry = Arc::new(Registry::new(Arc::clone(&runtime)));
    registry.insert_arc(Arc::clone(&serving), Source::Builtin, None);
    let own = Renderer {
        registry: Arc::clone(&registry),
        policy: OutputPolicy::default(),
        cluster_domain: "cluster.local".into(),
    };
    let ctx = Arc::new(Context::new(api.client(), Arc::new(own)));
    reconcile(Arc::new(db.clone()), Arc::clone(&ctx))
        .await
        .expect("the reconcile finishes");
    assert_eq!(plugin_counts(&ctx, calls).0, 1);

    // A new release: the same component with one more custom section (id
    // 0, size, name, payload), so another digest.
    let mut bytes = crate::plugin::builtin::bytes("raft")
        .expect("raft is built in")
        .to_vec();
    bytes.extend_from_slice(&[0, 15, 10]);
    bytes.extend_from_slice(b"atoll-testnext");
    let next = Arc::new(runtime.load("raft-next", &bytes).expect("it loads"));
    assert_ne!(next.digest(), serving.digest());

    ShadowRenderer::render_with(&*ctx, &db, &serving).expect("it renders");
    ShadowRenderer::render_with(&*ctx, &db, &next).expect("it renders");
    assert_eq!(
        plugin_counts(&ctx, calls).0,
        2,
        "the serving version's answer was kept; the new version rendered once"
    );
    let source = Source::ConfigMap {
        namespace: NS.into(),
        name: "raft-next".into(),
    };
    assert!(registry.insert_arc(Arc::clone(&next), source, None));
    reconcile(Arc::new(db), Arc::clone(&ctx))
        .await
        .expect("the reconcile finishes");
    assert_eq!(
        plugin_counts(&ctx, calls).0,
        2,
        "the reconcile after the swap used the shadow render's answer"
    );
    let status = api.get("databases", NS, "db").expect("db")["status"]["plugin"].clone();
    assert_eq!(status["digest"], json!(next.digest().to_string()));
}
