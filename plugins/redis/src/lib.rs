//! redis: partitions served by Atomix redis proxies in front of one Redis
//! primary and its replicas.
//!
//! ConfigMap `<db>-redis` (`redis.conf`), StatefulSet `<db>-redis` (pod 0 is
//! the primary, the others run with `replicaof` pointing at it) and its
//! headless Service `<db>-redis-hs`, PodDisruptionBudget `<db>-redis` (at
//! most one Redis server evicted at a time); proxy Deployment `<db>-proxy`, which the
//! partition Services `<db>-p<p>` all select. Every partition is ready when
//! every Redis replica and at least one proxy is. atoll does not fail over: if
//! the primary's pod is lost, writes wait until the StatefulSet restarts it.
//!
//! Pods meet Pod Security `restricted`: Redis runs as the official image's
//! `redis` user ([`REDIS_UID`], 999), which owns `/data`, rather than
//! starting as root and dropping to it; the proxies run as the SDK's default
//! non-root user.

use std::collections::BTreeMap;

use atoll_guest::atomix::{self, API_PORT};
use atoll_guest::k8s::{
    self, ContainerBuilder, PodBuilder, PullPolicy, Resources, ServiceBuilder, StatefulSetBuilder,
    VolumeClaimConfig,
};
use atoll_guest::{Database, Observed, Output, Placement, Plugin, StatusReport, Violation};
use schemars::JsonSchema;
use serde::Deserialize;

/// The port Redis listens on.
pub const REDIS_PORT: u16 = 6379;
/// Where `redis.conf` is mounted.
const CONF: &str = "/etc/redis/redis.conf";
/// Redis's working directory: the append-only file and RDB snapshots.
const DATA_DIR: &str = "/data";
/// User and group of the official redis image (`redis`, owner of /data):
/// the servers run as it, non-root, meeting Pod Security `restricted`. An
/// image of your own (`image`) must run as this uid too.
pub const REDIS_UID: i64 = 999;
/// Most Redis servers (primary and replicas) a Database may run.
pub const MAX_REPLICAS: u32 = 9;
/// Directives atoll writes itself: users may not set them in `config`.
/// (`slaveof` is the old name of `replicaof`.)
const RESERVED: [&str; 4] = ["port", "bind", "replicaof", "slaveof"];

/// `spec.storage.config` of a redis Database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Redis servers, 1..=9: pod 0 is the primary and the others replicate
    /// from it. There is no automatic failover.
    pub replicas: u32,
    /// Redis image.
    pub image: String,
    /// When to pull the Redis and proxy images.
    pub image_pull_policy: PullPolicy,
    /// `redis.conf` directives, directive → value (e.g. `maxmemory: 1gb`);
    /// replaces the default `appendonly: yes`. atoll sets `port`, `bind` and
    /// `replicaof` itself, so they are refused here.
    pub config: BTreeMap<String, String>,
    /// The Atomix proxies clients connect to.
    pub proxy: Proxy,
    /// Persistent storage per Redis server; without it data lives in an
    /// emptyDir and is lost when a pod is rescheduled.
    pub volume_claim_template: Option<VolumeClaimConfig>,
    /// Container resource requests and limits of each Redis server.
    pub resources: Resources,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replicas: 1,
            image: "redis:7.2".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            config: BTreeMap::from([("appendonly".into(), "yes".into())]),
            proxy: Proxy::default(),
            volume_claim_template: None,
            resources: Resources::default(),
        }
    }
}

/// `proxy`: the stateless Atomix proxies translating the Atomix API to Redis.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Proxy {
    /// Proxy image.
    pub image: String,
    /// Proxy pods, at least 1.
    pub replicas: u32,
    /// Container resource requests and limits of each proxy.
    pub resources: Resources,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            image: "atomix/redis-proxy:v0.5.0".into(),
            replicas: 1,
            resources: Resources::default(),
        }
    }
}

/// Violations of one `config` entry.
fn check_directive(key: &str, value: &str) -> Vec<Violation> {
    let path = if key.is_empty() {
        "config".to_string()
    } else {
        format!("config.{key}")
    };
    let mut v = Vec::new();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        v.push(Violation::config(
            &path,
            format!(
                "must be a redis.conf directive, one word of letters, digits and dashes (got `{key}`), such as maxmemory-policy"
            ),
        ));
    } else if RESERVED.contains(&key.to_ascii_lowercase().as_str()) {
        v.push(Violation::config(
            &path,
            format!(
                "`{key}` is set by atoll (Redis listens on {REDIS_PORT} on all addresses, and replicas follow pod 0); remove it"
            ),
        ));
    }
    if value.contains(['\n', '\r']) {
        v.push(Violation::config(
            &path,
            "must be on one line (got a line break): redis.conf takes one directive per line",
        ));
    } else if value.trim().is_empty() {
        v.push(Violation::config(
            &path,
            "must not be empty: write \"\" for an empty argument, as in `save: '\"\"'`",
        ));
    }
    v
}

pub struct Redis;

impl Redis {
    fn redis_labels(db: &Database) -> k8s::Labels {
        atomix::labels(db, Self::NAME, "redis")
    }

    fn proxy_labels(db: &Database) -> k8s::Labels {
        atomix::labels(db, Self::NAME, "proxy")
    }

    /// Stable DNS name of the primary, pod 0.
    fn primary_host(db: &Database) -> String {
        db.pod_host(&db.child("redis-0"), &db.child("redis-hs"))
    }

    /// `redis.conf`: atoll's directives, then the user's.
    fn redis_conf(db: &Database, config: &Config) -> String {
        let mut conf = format!(
            "# Rendered by atoll for Database {}; port, bind and replicaof are atoll's.\n\
             port {REDIS_PORT}\n\
             bind * -::*\n\
             protected-mode no\n\
             dir {DATA_DIR}\n",
            db.name
        );
        for (key, value) in &config.config {
            conf.push_str(&format!("{key} {value}\n"));
        }
        conf
    }

    fn render_redis(db: &Database, config: &Config, out: &mut Output) {
        let name = db.child("redis");
        let hs = db.child("redis-hs");
        let labels = Self::redis_labels(db);
        out.push(k8s::config_map(
            &name,
            &labels,
            [("redis.conf", Self::redis_conf(db, config))],
        ));
        out.push(
            ServiceBuilder::new(&hs, &labels)
                .port("redis", REDIS_PORT)
                .headless()
                .build(),
        );

        // Pod 0 is the primary; the others replicate from it.
        let start = format!(
            "if [ \"${{POD_NAME##*-}}\" = 0 ]; then exec redis-server {CONF}; fi\n\
             exec redis-server {CONF} --replicaof {} {REDIS_PORT}\n",
            Self::primary_host(db)
        );
        let redis = ContainerBuilder::new("redis", &config.image)
            .pull_policy(config.image_pull_policy)
            .command(["sh", "-c", start.as_str()])
            .env_from_field("POD_NAME", "metadata.name")
            .port("redis", REDIS_PORT)
            .mount("config", "/etc/redis", true)
            .mount("data", DATA_DIR, false)
            .readiness(k8s::exec_probe(["redis-cli", "ping"], 5, 10))
            .liveness(k8s::exec_probe(["redis-cli", "ping"], 30, 10))
            .resources(&config.resources)
            .build();
        // The official image's `redis` user, who owns /data; its entrypoint
        // only drops to it from root, so running as it directly is the same.
        let mut pod = PodBuilder::new(&labels)
            .run_as(REDIS_UID, REDIS_UID)
            .container(redis)
            .config_map_volume("config", &name)
            .affinity(k8s::anti_affinity(&labels, "kubernetes.io/hostname", false))
            .termination_grace_period(30);
        if config.volume_claim_template.is_none() {
            pod = pod.empty_dir_volume("data");
        }
        let mut sts = StatefulSetBuilder::new(&name, &labels, &hs, pod.build())
            .replicas(config.replicas as i32);
        if let Some(claim) = &config.volume_claim_template {
            sts = sts.volume_claim(claim.claim("data"));
        }
        out.push(sts.build());
        // One server down at a time: with the primary or a replica gone the
        // others still serve, and a single server can still be drained.
        out.push(k8s::pod_disruption_budget_max_unavailable(
            &name, &labels, 1,
        ));
    }

    fn render_proxy(db: &Database, config: &Config, out: &mut Output) {
        let labels = Self::proxy_labels(db);
        let proxy = ContainerBuilder::new("proxy", &config.proxy.image)
            .pull_policy(config.image_pull_policy)
            .env("REDIS_HOST", &Self::primary_host(db))
            .env("REDIS_PORT", &REDIS_PORT.to_string())
            .port("api", API_PORT)
            .readiness(k8s::tcp_probe("api", 5, 10))
            .liveness(k8s::tcp_probe("api", 30, 10))
            .resources(&config.proxy.resources)
            .build();
        let pod = PodBuilder::new(&labels)
            .container(proxy)
            .affinity(k8s::anti_affinity(&labels, "kubernetes.io/hostname", false))
            .build();
        out.push(k8s::deployment(
            &db.child("proxy"),
            &labels,
            config.proxy.replicas as i32,
            pod,
        ));
    }
}

impl Plugin for Redis {
    type Config = Config;
    const NAME: &'static str = "redis";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Partitions served by Atomix redis proxies over a Redis primary and its replicas";

    fn check(_db: &Database, config: &Config) -> Vec<Violation> {
        let mut v = Vec::new();
        if !(1..=MAX_REPLICAS).contains(&config.replicas) {
            v.push(Violation::config(
                "replicas",
                format!(
                    "must be between 1 and {MAX_REPLICAS} (got {}): 1 primary plus up to {} replicas",
                    config.replicas,
                    MAX_REPLICAS - 1
                ),
            ));
        }
        if config.image.trim().is_empty() {
            v.push(Violation::config("image", "must name a container image"));
        }
        for (key, value) in &config.config {
            v.extend(check_directive(key, value));
        }
        if config.proxy.image.trim().is_empty() {
            v.push(Violation::config(
                "proxy.image",
                "must name a container image",
            ));
        }
        if config.proxy.replicas == 0 {
            v.push(Violation::config(
                "proxy.replicas",
                "must be at least 1 (got 0): clients reach every partition through the proxies",
            ));
        }
        v.extend(config.proxy.resources.check("proxy.resources"));
        if let Some(claim) = &config.volume_claim_template {
            v.extend(claim.check("volumeClaimTemplate"));
        }
        v.extend(config.resources.check("resources"));
        v
    }

    fn render(db: &Database, config: &Config, out: &mut Output) -> Result<(), String> {
        Self::render_redis(db, config, out);
        Self::render_proxy(db, config, out);
        let proxies = Self::proxy_labels(db);
        for p in db.partition_ids() {
            // Clients reach the proxies; the data lives in the Redis pods.
            let placement = Placement::statefulset(db.child("redis"));
            atomix::partition_service(db, p, &proxies, placement, out);
        }
        Ok(())
    }

    fn status(db: &Database, config: &Config, observed: &Observed) -> StatusReport {
        let want = config.replicas as i32;
        let redis = observed.statefulset_ready(&db.child("redis"), want);
        let proxies = observed.deployment_ready(&db.child("proxy"));
        let mut waiting = Vec::new();
        if redis < want {
            waiting.push(format!("redis: {redis}/{want} replicas ready"));
        }
        if proxies < 1 {
            waiting.push(format!(
                "proxy: no replica ready (0/{})",
                config.proxy.replicas
            ));
        }
        // Pod 0 is the primary, but the StatefulSet's status counts ready
        // pods without saying which: only when all are ready is the primary
        // known to be up, so available is ready here.
        if waiting.is_empty() {
            StatusReport {
                ready_partitions: db.partition_ids().collect(),
                available_partitions: db.partition_ids().collect(),
                message: format!(
                    "all {want} redis replicas ready; proxy: {proxies}/{} replicas ready",
                    config.proxy.replicas
                ),
            }
        } else {
            StatusReport {
                message: waiting.join("; "),
                ..StatusReport::default()
            }
        }
    }
}

atoll_guest::export!(Redis);

#[cfg(test)]
mod tests;
