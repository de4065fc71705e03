//! The gRPC API's side of the install: TLS from a Secret (made with the
//! commands docs/grpc.md gives), the chart's `grpc.*` and `networkPolicy.*`
//! values.

use std::path::Path;

use atoll_testenv::kubectl;
use serde_json::Value;

use super::{args_of, chart, find, helm_template, objects, read, run_helm};

/// The read-only mount holding the `--grpc-tls-cert` file, as (the Secret
/// behind it, its directory); `None` without `--grpc-tls-cert`. Panics if
/// the file is not on such a mount, or another TLS flag's file is elsewhere.
pub(super) fn tls_volume(deployment: &Value) -> Option<(String, String)> {
    let args = args_of(deployment);
    let cert = args
        .iter()
        .find_map(|a| a.strip_prefix("--grpc-tls-cert="))?;
    let dir = Path::new(cert)
        .parent()
        .and_then(Path::to_str)
        .expect("an absolute path");
    let files = tls_files(deployment);
    assert!(
        files.iter().all(|f| f.starts_with(&format!("{dir}/"))),
        "{files:?} are not all in {dir}"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}: {pod}"));
    assert_eq!(mount["readOnly"], true, "{mount}");
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .unwrap_or_else(|| panic!("no volume for {mount}"));
    let secret = volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{volume} is not a Secret"));
    Some((secret.to_owned(), dir.to_owned()))
}

/// The files `--grpc-tls-cert`, `--grpc-tls-key` and `--grpc-client-ca` name.
fn tls_files(deployment: &Value) -> Vec<String> {
    args_of(deployment)
        .iter()
        .filter_map(|a| {
            ["--grpc-tls-cert=", "--grpc-tls-key=", "--grpc-client-ca="]
                .iter()
                .find_map(|flag| a.strip_prefix(flag))
        })
        .map(str::to_owned)
        .collect()
}

fn volume_names(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .chain(
            deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap().to_owned()),
        )
        .collect()
}

/// The chart's gRPC values: client certificates, anonymous namespaces, a
/// Secret of another name; plaintext; no NetworkPolicy; other selectors.
pub(super) async fn grpc_values() {
    let all = objects(
        &helm_template(
            "g",
            "ops",
            &[
                "--set",
                "grpc.anonymousNamespaces={shop,orders},grpc.tls.clientCA=true",
                "--set",
                "grpc.tls.secretName=my-cert",
            ],
        )
        .await,
    )
    .await;
    let deployment = find(&all, "Deployment", "g-atoll");
    assert_eq!(
        args_of(deployment),
        [
            "run",
            "--log-json",
            "--leader-elect",
            "--leader-election-lease=g-atoll",
            "--grpc-tls-cert=/etc/atoll/grpc-tls/tls.crt",
            "--grpc-tls-key=/etc/atoll/grpc-tls/tls.key",
            "--grpc-client-ca=/etc/atoll/grpc-tls/ca.crt",
            "--grpc-anonymous-namespaces=shop,orders"
        ]
    );
    assert_eq!(
        tls_volume(deployment),
        Some(("my-cert".to_owned(), "/etc/atoll/grpc-tls".to_owned()))
    );
    assert_eq!(
        find(&all, "NetworkPolicy", "g-atoll")["metadata"]["namespace"],
        "ops"
    );

    // Plaintext: no TLS flags, no Secret volume; and no NetworkPolicy.
    let all = objects(
        &helm_template(
            "g",
            "ops",
            &[
                "--set",
                "grpc.tls.enabled=false,grpc.anonymousNamespaces={shop}",
                "--set",
                "networkPolicy.enabled=false",
            ],
        )
        .await,
    )
    .await;
    let deployment = find(&all, "Deployment", "g-atoll");
    assert_eq!(
        args_of(deployment),
        [
            "run",
            "--log-json",
            "--leader-elect",
            "--leader-election-lease=g-atoll",
            "--grpc-anonymous-namespaces=shop"
        ]
    );
    assert_eq!(tls_volume(deployment), None);
    assert_eq!(
        volume_names(deployment),
        ["plugin-cache", "/var/cache/atoll"]
    );
    assert!(
        all.iter().all(|o| o["kind"] != "NetworkPolicy"),
        "networkPolicy.enabled=false still renders one"
    );

    // Client certificates are part of the TLS handshake.
    let chart = chart();
    let (ok, _, stderr) = run_helm(&[
        "template",
        "g",
        chart.to_str().unwrap(),
        "--set",
        "grpc.tls.enabled=false,grpc.tls.clientCA=true",
    ])
    .await;
    assert!(
        !ok && stderr.contains("grpc.tls.clientCA needs grpc.tls.enabled"),
        "{stderr}"
    );

    // Another selector for the scrapers (the default label removed with
    // null, as values.yaml says); the gRPC rule keeps its own.
    let all = objects(
        &helm_template(
            "g",
            "ops",
            &[
                "--set",
                r"networkPolicy.metrics.namespaceSelector.matchLabels.atoll\.dev/metrics-scraper=null",
                "--set",
                r"networkPolicy.metrics.namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring",
            ],
        )
        .await,
    )
    .await;
    let ingress = &find(&all, "NetworkPolicy", "g-atoll")["spec"]["ingress"];
    assert_eq!(
        ingress[0]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"atoll.dev/grpc-client": "true"}}}])
    );
    assert_eq!(
        ingress[1]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    assert_eq!(
        ingress[1]["ports"],
        serde_json::json!([{"port": "metrics", "protocol": "TCP"}])
    );
}

/// The openssl and kubectl commands docs/grpc.md gives for the gRPC TLS
/// Secret: the `sh` block after the line naming this file.
fn documented_tls_commands() -> String {
    let doc = read("docs/grpc.md");
    let marker = "<!-- testenv/tests/all/deploy.rs runs the next block -->";
    let after = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("docs/grpc.md lost the line {marker}"))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block right after the marker");
    block
        .split_once("\n```")
        .expect("the block's end")
        .0
        .to_owned()
}

/// Creates the gRPC TLS Secret `<service>-tls` in `namespace` with the
/// commands docs/grpc.md documents (for `atoll-grpc` in `atoll-system`,
/// there replaced by `service` and `namespace`), replacing an earlier one;
/// checks that the certificate they make verifies, for the Service's name,
/// against the CA they make. Returns the Secret's name.
pub(super) async fn create_tls_secret_as_documented(namespace: &str, service: &str) -> String {
    let secret = format!("{service}-tls");
    let out = kubectl(
        &[
            "delete",
            "secret",
            &secret,
            "-n",
            namespace,
            "--ignore-not-found",
        ],
        None,
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let script = documented_tls_commands()
        .replace("atoll-system", namespace)
        .replace("atoll-grpc", service);
    let dir = std::env::temp_dir().join(format!(
        "atoll-deploy-tls-{namespace}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(&dir)
            .env("KUBECONFIG", atoll_testenv::kubeconfig_env())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, output) = run("sh", &["-ec", &script]);
    assert!(ok, "the documented commands failed:\n{script}\n{output}");
    // As a client of the Service would check it (grpcurl -cacert ca.crt).
    let host = format!("{service}.{namespace}.svc");
    let (ok, output) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            &host,
            "tls.crt",
        ],
    );
    assert!(ok, "tls.crt does not verify for {host}: {output}");
    std::fs::remove_dir_all(&dir).unwrap();
    secret
}

/// The Secret `name` in `namespace` is a kubernetes.io/tls Secret holding
/// every file the live Deployment's TLS flags name, where it mounts it.
pub(super) async fn serves_tls_from(namespace: &str, deployment: &str, name: &str) {
    let out = kubectl(
        &[
            "get",
            "deployment",
            deployment,
            "-n",
            namespace,
            "-o",
            "json",
        ],
        None,
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let deployment: Value = serde_json::from_str(&out.stdout).unwrap();
    let (secret, dir) = tls_volume(&deployment).expect("TLS on by default");
    assert_eq!(secret, name);
    let out = kubectl(
        &["get", "secret", name, "-n", namespace, "-o", "json"],
        None,
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let secret: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for file in tls_files(&deployment) {
        let key = file.strip_prefix(&format!("{dir}/")).unwrap();
        assert!(
            secret["data"][key].as_str().is_some_and(|d| !d.is_empty()),
            "Secret {name} has no {key} for {file}"
        );
    }
}
