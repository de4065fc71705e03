use super::*;
use atoll_guest::k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use atoll_guest::k8s_openapi::api::core::v1::{Container, PodSpec};
use atoll_guest::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use atoll_guest::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use atoll_guest::testing::{self, with_status};
use serde_json::{Value, json};

fn db(partitions: u32, config: Value) -> Database {
    Database::new("kv", partitions)
        .in_namespace("apps")
        .with_config(config)
}

fn redis_pod(out: &testing::Objects) -> PodSpec {
    let sts: StatefulSet = out.typed("kv-redis");
    sts.spec.unwrap().template.spec.unwrap()
}

fn proxy_container(out: &testing::Objects) -> Container {
    let deploy: Deployment = out.typed("kv-proxy");
    deploy
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .remove(0)
}

fn conf(out: &testing::Objects) -> String {
    out.get("ConfigMap", "kv-redis")["data"]["redis.conf"]
        .as_str()
        .unwrap()
        .to_string()
}

fn fields(config: Value) -> Vec<String> {
    testing::violations::<Redis>(&db(1, config))
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[test]
fn renders_redis_proxy_and_partition_services() {
    let out = testing::render::<Redis>(&db(3, json!({"replicas": 3}))).unwrap();
    assert_eq!(out.names("ConfigMap"), ["kv-redis"]);
    assert_eq!(out.names("StatefulSet"), ["kv-redis"]);
    assert_eq!(out.names("Deployment"), ["kv-proxy"]);
    assert_eq!(
        out.names("Service"),
        ["kv-redis-hs", "kv-p1", "kv-p2", "kv-p3"]
    );
    assert_eq!(out.names("PodDisruptionBudget"), ["kv-redis"]);
    assert_eq!(out.objects.len(), 8);

    let hs = out.get("Service", "kv-redis-hs");
    assert_eq!(hs["spec"]["clusterIP"], "None");
    assert_eq!(hs["spec"]["ports"][0]["port"], 6379);
    assert_eq!(
        hs["spec"]["selector"]["app.kubernetes.io/component"],
        "redis"
    );

    // Every partition Service selects the proxies, not Redis.
    for p in 1..=3 {
        let svc = out.get("Service", &format!("kv-p{p}"));
        let selector = &svc["spec"]["selector"];
        assert_eq!(selector["app.kubernetes.io/component"], "proxy", "p{p}");
        assert_eq!(selector["app.kubernetes.io/name"], "redis");
        assert_eq!(selector["atoll.dev/database"], "kv");
        assert_eq!(svc["spec"]["ports"][0]["port"], 5678);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "api");
        assert_eq!(
            svc["metadata"]["labels"]["atoll.dev/partition"],
            p.to_string()
        );
    }
    let bindings: Vec<(u32, &str, u16)> = out
        .partitions
        .iter()
        .map(|b| (b.partition, b.service.as_str(), b.port))
        .collect();
    assert_eq!(
        bindings,
        [(1, "kv-p1", 5678), (2, "kv-p2", 5678), (3, "kv-p3", 5678)]
    );
}

#[test]
fn redis_servers_are_evicted_one_at_a_time() {
    for replicas in [1, 3] {
        let out = testing::render::<Redis>(&db(1, json!({"replicas": replicas}))).unwrap();
        let pdb: PodDisruptionBudget = out.typed("kv-redis");
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let selector = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(
            selector,
            [
                ("app.kubernetes.io/component", "redis"),
                ("app.kubernetes.io/instance", "kv"),
                ("app.kubernetes.io/name", "redis"),
                ("atoll.dev/database", "kv"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        );
        let sts: StatefulSet = out.typed("kv-redis");
        assert_eq!(
            sts.spec.unwrap().selector.match_labels.unwrap(),
            selector,
            "the budget covers the StatefulSet's pods"
        );
    }
}

#[test]
fn workloads_roll_without_losing_capacity() {
    let out = testing::render::<Redis>(&db(1, json!({"replicas": 3}))).unwrap();
    let sts = out.get("StatefulSet", "kv-redis");
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    let proxy = out.get("Deployment", "kv-proxy");
    assert_eq!(
        proxy["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
}

#[test]
fn redis_statefulset_runs_a_primary_and_replicas() {
    let out = testing::render::<Redis>(&db(1, json!({"replicas": 3}))).unwrap();
    let sts: StatefulSet = out.typed("kv-redis");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("kv-redis-hs"));

    let pod = spec.template.spec.unwrap();
    let redis = &pod.containers[0];
    assert_eq!(redis.image.as_deref(), Some("redis:7.2"));
    let command = redis.command.as_ref().unwrap();
    assert_eq!(command[..2], ["sh", "-c"]);
    assert_eq!(
        command[2],
        "if [ \"${POD_NAME##*-}\" = 0 ]; then exec redis-server /etc/redis/redis.conf; fi\n\
         exec redis-server /etc/redis/redis.conf --replicaof kv-redis-0.kv-redis-hs.apps.svc.cluster.local 6379\n"
    );
    let env = redis.env.as_ref().unwrap();
    assert_eq!(env[0].name, "POD_NAME");
    assert_eq!(
        env[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    let port = &redis.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("redis"), 6379)
    );

    for probe in [&redis.readiness_probe, &redis.liveness_probe] {
        let exec = probe.as_ref().unwrap().exec.as_ref().unwrap();
        assert_eq!(exec.command.as_deref().unwrap(), ["redis-cli", "ping"]);
    }

    let mounts: Vec<(&str, &str)> = redis
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(mounts, [("config", "/etc/redis"), ("data", "/data")]);
    let volumes = pod.volumes.unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "config" && v.config_map.as_ref().unwrap().name == "kv-redis")
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some())
    );
    assert!(spec.volume_claim_templates.is_none());
}

#[test]
fn redis_conf_has_atolls_directives_then_the_users() {
    let out = testing::render::<Redis>(&db(1, json!({}))).unwrap();
    assert_eq!(
        conf(&out),
        "# Rendered by atoll for Database kv; port, bind and replicaof are atoll's.\n\
         port 6379\nbind * -::*\nprotected-mode no\ndir /data\nappendonly yes\n"
    );

    let cfg =
        json!({"config": {"maxmemory": "1gb", "maxmemory-policy": "allkeys-lru", "save": "\"\""}});
    let text = conf(&testing::render::<Redis>(&db(1, cfg)).unwrap());
    assert!(
        text.ends_with("dir /data\nmaxmemory 1gb\nmaxmemory-policy allkeys-lru\nsave \"\"\n"),
        "{text}"
    );
    assert!(
        !text.contains("appendonly"),
        "user config replaces the default"
    );
}

#[test]
fn volume_claim_template_replaces_empty_dir() {
    let cfg = json!({"volumeClaimTemplate": {"size": "5Gi", "storageClassName": "ssd"}});
    let out = testing::render::<Redis>(&db(1, cfg)).unwrap();
    let sts: StatefulSet = out.typed("kv-redis");
    let spec = sts.spec.unwrap();
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.as_ref().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("ssd"));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "5Gi"
    );
    let volumes = spec.template.spec.unwrap().volumes.unwrap();
    assert!(!volumes.iter().any(|v| v.name == "data"));
}

#[test]
fn proxy_deployment_points_at_the_primary() {
    let cfg = json!({"proxy": {"replicas": 2, "image": "example/proxy:dev",
                               "resources": {"requests": {"cpu": "100m"}}},
                     "imagePullPolicy": "Always"});
    let out = testing::render::<Redis>(&db(1, cfg)).unwrap();
    let deploy: Deployment = out.typed("kv-proxy");
    let spec = deploy.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let selector = spec.selector.match_labels.unwrap();
    assert_eq!(selector["app.kubernetes.io/component"], "proxy");

    let proxy = proxy_container(&out);
    assert_eq!(proxy.image.as_deref(), Some("example/proxy:dev"));
    assert_eq!(proxy.image_pull_policy.as_deref(), Some("Always"));
    let env: Vec<(&str, &str)> = proxy
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            (
                "REDIS_HOST",
                "kv-redis-0.kv-redis-hs.apps.svc.cluster.local"
            ),
            ("REDIS_PORT", "6379")
        ]
    );
    let port = &proxy.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("api"), 5678)
    );
    for probe in [&proxy.readiness_probe, &proxy.liveness_probe] {
        let tcp = probe.as_ref().unwrap().tcp_socket.as_ref().unwrap();
        assert_eq!(
            tcp.port,
            atoll_guest::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                "api".into()
            )
        );
    }
    let requests = proxy.resources.unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "100m");

    // The Redis container keeps the Database-wide pull policy, not the
    // proxy's resources.
    let redis = &redis_pod(&out).containers[0];
    assert_eq!(redis.image_pull_policy.as_deref(), Some("Always"));
    assert!(redis.resources.is_none());
}

#[test]
fn defaults() {
    let out = testing::render::<Redis>(&db(1, json!({}))).unwrap();
    let sts: StatefulSet = out.typed("kv-redis");
    assert_eq!(sts.spec.unwrap().replicas, Some(1));
    let deploy: Deployment = out.typed("kv-proxy");
    assert_eq!(deploy.spec.unwrap().replicas, Some(1));
    let proxy = proxy_container(&out);
    assert_eq!(proxy.image.as_deref(), Some("atomix/redis-proxy:v0.5.0"));
    assert_eq!(proxy.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert!(proxy.resources.is_none());
    let redis = &redis_pod(&out).containers[0];
    assert_eq!(redis.image.as_deref(), Some("redis:7.2"));
    assert!(conf(&out).contains("\nappendonly yes\n"));
}

#[test]
fn validation_names_each_field_and_the_fix() {
    let bad = json!({
        "replicas": 10,
        "image": "",
        "config": {"port": "7000", "maxmemory": "1gb\nport 7000", "save": " "},
        "proxy": {"image": " ", "replicas": 0, "resources": {"limits": {"cpu": "lots"}}},
        "volumeClaimTemplate": {"size": "ten"},
        "resources": {"requests": {"memory": "1 Gi"}},
    });
    assert_eq!(
        fields(bad),
        [
            "spec.storage.config.replicas",
            "spec.storage.config.image",
            "spec.storage.config.config.maxmemory",
            "spec.storage.config.config.port",
            "spec.storage.config.config.save",
            "spec.storage.config.proxy.image",
            "spec.storage.config.proxy.replicas",
            "spec.storage.config.proxy.resources.limits.cpu",
            "spec.storage.config.volumeClaimTemplate.size",
            "spec.storage.config.resources.requests.memory",
        ]
    );
    let v = &testing::violations::<Redis>(&db(1, json!({"replicas": 0})))[0];
    assert!(v.message.contains("between 1 and 9 (got 0)"), "{v}");
    assert!(testing::violations::<Redis>(&db(1, json!({"replicas": 9}))).is_empty());
}

#[test]
fn config_directives_are_checked() {
    let messages = |config: Value| -> Vec<String> {
        testing::violations::<Redis>(&db(1, json!({ "config": config })))
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    };
    for reserved in ["replicaof", "slaveof", "port", "bind", "BIND"] {
        let m = messages(json!({ reserved: "x" }));
        assert_eq!(m.len(), 1, "{reserved}: {m:?}");
        assert!(
            m[0].starts_with(&format!(
                "spec.storage.config.config.{reserved}: `{reserved}` is set by atoll"
            )),
            "{m:?}"
        );
    }
    let m = messages(json!({"max memory": "1gb"}));
    assert!(
        m[0].contains("one word of letters, digits and dashes (got `max memory`)"),
        "{m:?}"
    );
    let m = messages(json!({"": "1gb"}));
    assert!(m[0].starts_with("spec.storage.config.config: "), "{m:?}");
    let m = messages(json!({"maxmemory": "1gb\r\nslaveof evil 6379"}));
    assert!(m[0].contains("must be on one line"), "{m:?}");
    let m = messages(json!({"save": ""}));
    assert!(m[0].contains("write \"\" for an empty argument"), "{m:?}");
    assert!(messages(json!({"maxmemory-policy": "allkeys-lru", "save": "900 1"})).is_empty());
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let v = &testing::violations::<Redis>(&db(1, json!({"proxy": {"replica": 2}})))[0];
    assert_eq!(v.field, "spec.storage.config.proxy.replica");
    assert!(v.message.contains("unknown field `replica`"), "{v}");
    let v = &testing::violations::<Redis>(&db(1, json!({"redisConfig": {}})))[0];
    assert!(v.message.contains("unknown field `redisConfig`"), "{v}");
    let v = &testing::violations::<Redis>(&db(1, json!({"config": {"maxmemory": 100}})))[0];
    assert_eq!(v.field, "spec.storage.config.config.maxmemory");
    assert!(v.message.contains("expected a string"), "{v}");
}

#[test]
fn render_refuses_an_invalid_database() {
    let err = testing::render::<Redis>(&db(1, json!({"config": {"bind": "0.0.0.0"}}))).unwrap_err();
    assert!(matches!(err, atoll_guest::RenderError::Invalid(v) if v.len() == 1));
}

#[test]
fn readiness_needs_every_redis_and_a_proxy() {
    let kv = db(2, json!({"replicas": 3, "proxy": {"replicas": 2}}));
    let out = testing::render::<Redis>(&kv).unwrap();
    let sts = |ready: i32| {
        with_status(
            out.get("StatefulSet", "kv-redis"),
            json!({"replicas": 3, "readyReplicas": ready}),
        )
    };
    let proxy = |ready: i32| {
        with_status(
            out.get("Deployment", "kv-proxy"),
            json!({"replicas": 2, "readyReplicas": ready}),
        )
    };

    let none = testing::status::<Redis>(&kv, &[]);
    assert!(none.ready_partitions.is_empty());
    assert_eq!(
        none.message,
        "redis: 0/3 replicas ready; proxy: no replica ready (0/2)"
    );

    let no_proxy = testing::status::<Redis>(&kv, &[sts(3), proxy(0)]);
    assert!(no_proxy.ready_partitions.is_empty());
    assert_eq!(no_proxy.message, "proxy: no replica ready (0/2)");

    let short = testing::status::<Redis>(&kv, &[sts(2), proxy(2)]);
    assert!(short.ready_partitions.is_empty());
    assert_eq!(short.message, "redis: 2/3 replicas ready");

    let ready = testing::status::<Redis>(&kv, &[sts(3), proxy(1)]);
    assert_eq!(ready.ready_partitions, [1, 2]);
    assert_eq!(
        ready.message,
        "all 3 redis replicas ready; proxy: 1/2 replicas ready"
    );

    // A StatefulSet still sized for 3 while the config asks for 5.
    let five = db(2, json!({"replicas": 5}));
    assert!(
        testing::status::<Redis>(&five, &[sts(3), proxy(1)])
            .ready_partitions
            .is_empty()
    );
}

#[test]
fn metadata_publishes_the_config_schema() {
    let m = atoll_guest::dispatch::metadata::<Redis>();
    assert_eq!(m.name, "redis");
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    let props = &schema["properties"];
    assert_eq!(props["replicas"]["default"], 1, "{schema}");
    assert_eq!(props["image"]["default"], "redis:7.2");
    assert_eq!(props["config"]["default"], json!({"appendonly": "yes"}));
    assert_eq!(props["config"]["additionalProperties"]["type"], "string");
    assert!(props["volumeClaimTemplate"].is_object());
    let proxy = &schema["$defs"]["Proxy"]["properties"];
    assert_eq!(proxy["image"]["default"], "atomix/redis-proxy:v0.5.0");
    assert_eq!(proxy["replicas"]["default"], 1);
}

#[test]
fn partitions_live_in_the_redis_statefulset_not_the_proxies() {
    let out = testing::render::<Redis>(&db(3, json!({}))).unwrap();
    assert_eq!(out.names("StatefulSet"), ["kv-redis"]);
    assert_eq!(out.partitions.len(), 3);
    for b in &out.partitions {
        // Clients reach the proxies; the data is in the Redis pods.
        assert_eq!(b.placement, Placement::statefulset("kv-redis"), "{b:?}");
    }
}

#[test]
fn redis_runs_as_the_images_user_and_the_proxy_as_a_non_root_default() {
    let out = testing::render::<Redis>(&db(1, json!({}))).unwrap();
    let pod = redis_pod(&out);
    let pod_context = pod.security_context.unwrap();
    assert_eq!(pod_context.run_as_user, Some(999));
    assert_eq!(pod_context.fs_group, Some(999), "/data writable by redis");
    assert_eq!(pod_context.run_as_non_root, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let redis = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(redis.run_as_user, Some(999));
    assert_eq!(redis.allow_privilege_escalation, Some(false));
    assert_eq!(
        redis.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let proxy = proxy_container(&out).security_context.unwrap();
    assert_eq!(proxy.run_as_user, Some(atoll_guest::k8s::DEFAULT_USER));
    assert_eq!(proxy.run_as_non_root, Some(true));
    assert_eq!(proxy.seccomp_profile.unwrap().type_, "RuntimeDefault");
}
