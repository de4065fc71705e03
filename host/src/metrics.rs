//! Prometheus metrics of the operator, exposed in the OpenMetrics text format.
//!
//! Families (label names in braces):
//! - `atoll_reconciles_total{plugin}`: finished reconciles, successful or not;
//! - `atoll_reconcile_errors_total{plugin,reason}`: reconciles that ended in an
//!   error or a degraded Database, by reason;
//! - `atoll_reconcile_duration_seconds{plugin}`: histogram of reconcile time;
//! - `atoll_plugin_call_duration_seconds{plugin,function}`: histogram of the
//!   time one plugin call (`validate`, `render`, `status`, ...) took; its
//!   `_count` is the number of calls made;
//! - `atoll_plugin_calls_memoized_total{plugin,function}`: `render` and
//!   `status` calls answered from the memo (`render::memo`) instead of the
//!   plugin: the input was the same as an earlier call's;
//! - `atoll_objects_applied_total{kind}`: server-side applies of children;
//! - `atoll_objects_pruned_total{kind}`: children deleted because they were no
//!   longer rendered;
//! - `atoll_rollout_moves_total{plugin}`, `atoll_rollout_halts_total{plugin}`,
//!   `atoll_rollout_rollbacks_total{plugin}`: Databases rollouts moved,
//!   rollouts halted by a failed gate, Databases moved back after one;
//! - `atoll_grpc_join_streams`: open `JoinGroup` streams (gauge);
//! - `atoll_grpc_member_records`: Member records written (or being written)
//!   for `JoinGroup` streams and not deleted yet, those waiting to be deleted
//!   included (gauge);
//! - `atoll_grpc_member_watches`: watches on Member objects, one per
//!   namespace with open streams, shared by them (gauge).
//!
//! The gauges are always present (at 0 when idle); the other families appear
//! once their first series is recorded.
//!
//! Guarantees: [`Metrics`] is cheap to clone (clones share the same counters)
//! and safe to use from any thread; recording never blocks on encoding for
//! longer than a counter update.
//!
//! Caveat: every distinct label value creates a series that lives until the
//! process exits. Label values must come from a small, fixed set: plugin names,
//! WIT function names, Kubernetes kinds, and short reason codes such as
//! `InvalidSpec` or `PluginError` — never error messages or object names.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reconcile duration buckets, in seconds: 5 ms to about 41 s.
const RECONCILE_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Plugin call duration buckets, in seconds: 50 µs to the default 1 s deadline
/// and a little beyond (a call cut off by its deadline lands near it).
const PLUGIN_CALL_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    plugin: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

fn plugin_call_histogram() -> Histogram {
    Histogram::new(PLUGIN_CALL_BUCKETS)
}

struct Inner {
    registry: Registry,
    reconciles: Family<PluginLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<PluginLabels>,
    plugin_call_duration: HistogramFamily<CallLabels>,
    memoized: Family<CallLabels, Counter>,
    applied: Family<KindLabels, Counter>,
    pruned: Family<KindLabels, Counter>,
    join_streams: Gauge,
    member_records: Gauge,
    member_watches: Gauge,
    rollout_moves: Family<PluginLabels, Counter>,
    rollout_halts: Family<PluginLabels, Counter>,
    rollout_rollbacks: Family<PluginLabels, Counter>,
}

/// The operator's metrics. Clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, with no series yet. A labelled family
    /// appears in [`encode`](Self::encode)'s output (with its `# HELP`/`#
    /// TYPE` lines) once its first series is recorded; the gauges at once.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<PluginLabels, Counter>::default();
        registry.register(
            "atoll_reconciles",
            "Reconciles of Databases that finished, successfully or not",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "atoll_reconcile_errors",
            "Reconciles that failed or left the Database degraded, by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration: HistogramFamily<PluginLabels> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register_with_unit(
            "atoll_reconcile_duration",
            "Time one reconcile of a Database took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let plugin_call_duration: HistogramFamily<CallLabels> =
            Family::new_with_constructor(plugin_call_histogram);
        registry.register_with_unit(
            "atoll_plugin_call_duration",
            "Time one call into a plugin took, by contract function",
            Unit::Seconds,
            plugin_call_duration.clone(),
        );
        let memoized = Family::<CallLabels, Counter>::default();
        registry.register(
            "atoll_plugin_calls_memoized",
            "Plugin calls answered from the memo of earlier calls with the same input",
            memoized.clone(),
        );
        let applied = Family::<KindLabels, Counter>::default();
        registry.register(
            "atoll_objects_applied",
            "Child objects written with server-side apply",
            applied.clone(),
        );
        let pruned = Family::<KindLabels, Counter>::default();
        registry.register(
            "atoll_objects_pruned",
            "Child objects deleted because they were no longer rendered",
            pruned.clone(),
        );
        let join_streams = Gauge::default();
        registry.register(
            "atoll_grpc_join_streams",
            "Open JoinGroup streams of the gRPC membership service",
            join_streams.clone(),
        );
        let member_records = Gauge::default();
        registry.register(
            "atoll_grpc_member_records",
            "Member records written (or being written) for JoinGroup streams and not deleted yet",
            member_records.clone(),
        );
        let member_watches = Gauge::default();
        registry.register(
            "atoll_grpc_member_watches",
            "Watches on Member objects, one per namespace with JoinGroup streams",
            member_watches.clone(),
        );
        let rollout_moves = Family::<PluginLabels, Counter>::default();
        registry.register(
            "atoll_rollout_moves",
            "Databases a rollout moved to a new plugin version",
            rollout_moves.clone(),
        );
        let rollout_halts = Family::<PluginLabels, Counter>::default();
        registry.register(
            "atoll_rollout_halts",
            "Rollouts halted by a failed health gate",
            rollout_halts.clone(),
        );
        let rollout_rollbacks = Family::<PluginLabels, Counter>::default();
        registry.register(
            "atoll_rollout_rollbacks",
            "Databases moved back to the previous version after a failed gate",
            rollout_rollbacks.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                reconcile_errors,
                reconcile_duration,
                plugin_call_duration,
                memoized,
                applied,
                pruned,
                join_streams,
                member_records,
                member_watches,
                rollout_moves,
                rollout_halts,
                rollout_rollbacks,
            }),
        }
    }

    /// A rollout of `plugin` moved one Database to its new version.
    pub fn rollout_moved(&self, plugin: &str) {
        self.inner
            .rollout_moves
            .get_or_create(&PluginLabels {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    /// A rollout of `plugin` halted at a failed gate.
    pub fn rollout_halted(&self, plugin: &str) {
        self.inner
            .rollout_halts
            .get_or_create(&PluginLabels {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    /// A rollout of `plugin` moved one Database back after a failed gate.
    pub fn rollout_rolled_back(&self, plugin: &str) {
        self.inner
            .rollout_rollbacks
            .get_or_create(&PluginLabels {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    /// One reconcile of a Database using `plugin` finished after `duration`
    /// (count it whether it succeeded or not; failures also go to
    /// [`reconcile_error`](Self::reconcile_error)).
    pub fn reconciled(&self, plugin: &str, duration: Duration) {
        let labels = PluginLabels {
            plugin: plugin.to_owned(),
        };
        self.inner.reconciles.get_or_create(&labels).inc();
        self.inner
            .reconcile_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// A reconcile of a Database using `plugin` failed or degraded the
    /// Database; `reason` is a short code from a fixed set (a condition
    /// reason such as `PluginError`, or `KubernetesApi`), not a message.
    pub fn reconcile_error(&self, plugin: &str, reason: &str) {
        self.inner
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                plugin: plugin.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// One call of contract function `function` (`metadata`, `validate`,
    /// `render`, `status`) into `plugin` took `duration`, however it ended.
    pub fn plugin_call(&self, plugin: &str, function: &str, duration: Duration) {
        self.inner
            .plugin_call_duration
            .get_or_create(&CallLabels {
                plugin: plugin.to_owned(),
                function: function.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A call of `function` into `plugin` was answered from the memo: no
    /// plugin ran.
    pub fn memoized(&self, plugin: &str, function: &str) {
        self.inner
            .memoized
            .get_or_create(&CallLabels {
                plugin: plugin.to_owned(),
                function: function.to_owned(),
            })
            .inc();
    }

    /// One object of `kind` (e.g. `StatefulSet`) was server-side applied.
    pub fn applied(&self, kind: &str) {
        self.inner
            .applied
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// One object of `kind` was deleted because it was no longer rendered.
    pub fn pruned(&self, kind: &str) {
        self.inner
            .pruned
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Open JoinGroup streams.
    pub fn join_streams(&self) -> &Gauge {
        &self.inner.join_streams
    }

    /// Member records written for JoinGroup streams and not deleted yet.
    pub fn member_records(&self) -> &Gauge {
        &self.inner.member_records
    }

    /// Shared watches on Member objects.
    pub fn member_watches(&self) -> &Gauge {
        &self.inner.member_watches
    }

    /// Every family in the OpenMetrics text format (ending with `# EOF`),
    /// to be served with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_recorded_encodes_only_the_gauges() {
        let text = Metrics::new().encode();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "atoll_grpc_join_streams 0",
                "atoll_grpc_member_records 0",
                "atoll_grpc_member_watches 0"
            ],
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn encode_shows_recorded_series() {
        let metrics = Metrics::new();
        let clone = metrics.clone();
        metrics.reconciled("raft", Duration::from_millis(30));
        clone.reconciled("raft", Duration::from_millis(70));
        metrics.reconciled("cache", Duration::from_millis(3));
        metrics.reconcile_error("raft", "PluginError");
        metrics.plugin_call("raft", "render", Duration::from_micros(400));
        metrics.memoized("raft", "status");
        metrics.applied("StatefulSet");
        metrics.applied("StatefulSet");
        metrics.applied("Service");
        metrics.pruned("ConfigMap");
        metrics.join_streams().inc();
        clone.member_records().set(3);
        let text = metrics.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for family in [
            "# TYPE atoll_reconciles counter",
            "# TYPE atoll_reconcile_errors counter",
            "# TYPE atoll_reconcile_duration_seconds histogram",
            "# UNIT atoll_reconcile_duration_seconds seconds",
            "# TYPE atoll_plugin_call_duration_seconds histogram",
            "# UNIT atoll_plugin_call_duration_seconds seconds",
            "# TYPE atoll_plugin_calls_memoized counter",
            "# TYPE atoll_objects_applied counter",
            "# TYPE atoll_objects_pruned counter",
        ] {
            assert!(text.contains(family), "missing {family:?} in\n{text}");
        }
        for line in [
            r#"atoll_reconciles_total{plugin="raft"} 2"#,
            r#"atoll_reconciles_total{plugin="cache"} 1"#,
            r#"atoll_reconcile_errors_total{plugin="raft",reason="PluginError"} 1"#,
            r#"atoll_reconcile_duration_seconds_count{plugin="raft"} 2"#,
            r#"atoll_reconcile_duration_seconds_sum{plugin="raft"} 0.1"#,
            r#"atoll_reconcile_duration_seconds_bucket{le="0.05",plugin="raft"} 1"#,
            r#"atoll_reconcile_duration_seconds_bucket{le="0.1",plugin="raft"} 2"#,
            r#"atoll_plugin_call_duration_seconds_count{plugin="raft",function="render"} 1"#,
            r#"atoll_plugin_call_duration_seconds_bucket{le="0.0005",plugin="raft",function="render"} 1"#,
            r#"atoll_plugin_call_duration_seconds_bucket{le="0.00025",plugin="raft",function="render"} 0"#,
            r#"atoll_plugin_calls_memoized_total{plugin="raft",function="status"} 1"#,
            r#"atoll_objects_applied_total{kind="StatefulSet"} 2"#,
            r#"atoll_objects_applied_total{kind="Service"} 1"#,
            r#"atoll_objects_pruned_total{kind="ConfigMap"} 1"#,
            "atoll_grpc_join_streams 1",
            "atoll_grpc_member_records 3",
            "atoll_grpc_member_watches 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in\n{text}"
            );
        }
    }
}
