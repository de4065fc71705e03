//! {{name}}: one StatefulSet of `replicas` pods, a headless Service for
//! their DNS names, and one Service per partition in front of them.

use atoll_guest::k8s::{self, ContainerBuilder, PodBuilder, ServiceBuilder, StatefulSetBuilder};
use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport, Violation};
use schemars::JsonSchema;
use serde::Deserialize;

/// `spec.storage.config` of a {{name}} Database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Pods serving every partition, at least 1.
    pub replicas: u32,
    /// Container image of the pods.
    pub image: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replicas: 1,
            image: "registry.example/{{name}}:0.1.0".into(),
        }
    }
}

pub struct ThePlugin;

impl Plugin for ThePlugin {
    type Config = Config;
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "{{name}}: a StatefulSet and a Service per partition";

    fn check(_db: &Database, config: &Config) -> Vec<Violation> {
        let mut v = Vec::new();
        if config.replicas == 0 {
            v.push(Violation::config("replicas", "must be at least 1 (got 0)"));
        }
        v
    }

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        let labels = k8s::labels([("app.kubernetes.io/name", Self::NAME), ("atoll.dev/database", db.name.as_str())]);
        let hs = db.child("hs");
        out.push(ServiceBuilder::new(&hs, &labels).port("api", 5678).headless().build());
        let container = ContainerBuilder::new("server", &config.image)
            .port("api", 5678)
            .readiness(k8s::tcp_probe("api", 5, 10))
            .build();
        let pod = PodBuilder::new(&labels).container(container).build();
        out.push(StatefulSetBuilder::new(&db.name, &labels, &hs, pod).replicas(config.replicas as i32).build());
        for p in db.partition_ids() {
            let name = db.child(format!("p{p}"));
            out.push(ServiceBuilder::new(&name, &labels).port("api", 5678).build());
            // Nothing on disk: say so, or name the StatefulSet that holds data.
            out.bind(p, name, 5678, Placement::Nowhere);
        }
        Ok(())
    }

    fn status(db: &Database, config: &Config, observed: &Observed) -> StatusReport {
        let want = config.replicas as i32;
        let ready = observed.statefulset_ready(&db.name, want);
        let all: Vec<u32> = if ready >= want { db.partition_ids().collect() } else { Vec::new() };
        StatusReport {
            available_partitions: all.clone(),
            ready_partitions: all,
            message: format!("{ready}/{want} replicas ready"),
        }
    }
}

atoll_guest::export!(ThePlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_guest::testing;

    #[test]
    fn renders_a_service_per_partition() {
        let out = testing::render::<ThePlugin>(&Database::new("demo", 2)).unwrap();
        assert_eq!(out.names("Service"), ["demo-hs", "demo-p1", "demo-p2"]);
        assert_eq!(out.names("StatefulSet"), ["demo"]);
    }

    #[test]
    fn zero_replicas_is_refused_by_name() {
        let db = Database::new("demo", 1).with_config(serde_json::json!({"replicas": 0}));
        assert_eq!(testing::violations::<ThePlugin>(&db)[0].field, "spec.storage.config.replicas");
    }
}
