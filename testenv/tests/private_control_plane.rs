//! A private control plane serves, becomes the default while asked to, and
//! leaves no process behind when dropped: normally (directory removed) or
//! while panicking (directory kept for its logs).
//!
//! Its own test binary, not a module of `tests/all`: `use_by_default` is
//! process-wide, and would point the other tests' helpers at this private
//! control plane.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use atoll_testenv::{PrivateControlPlane, client, kubeconfig_env, readyz};

#[tokio::test]
async fn private_control_plane_serves_and_is_torn_down_on_drop_and_on_panic() {
    let plane = PrivateControlPlane::start().await;
    let dir = plane.dir().to_path_buf();
    let recorded = pids(&dir);
    assert_eq!(
        recorded.len(),
        5,
        "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok"
    );
    assert_ne!(
        plane.kubeconfig(),
        atoll_testenv::state_dir().join("kubeconfig"),
        "a private control plane must not use the shared state directory"
    );

    plane.use_by_default();
    assert_eq!(kubeconfig_env(), plane.kubeconfig().as_os_str());
    // `client` checks /readyz itself; Nodes prove kwok and the set-up ran.
    let client = client().await;
    assert_eq!(readyz(&client).await.unwrap(), "ok");
    let nodes = atoll_testenv::kubectl(&["get", "nodes", "-o", "name"], None).await;
    assert_eq!(nodes.stdout.lines().count(), 3, "{nodes:?}");

    drop(plane);
    assert_ne!(kubeconfig_env(), dir.join("kubeconfig").as_os_str());
    assert!(
        !dir.exists(),
        "{} outlived its control plane",
        dir.display()
    );
    assert_eq!(
        running(&recorded),
        Vec::<u32>::new(),
        "processes outlived the drop"
    );

    // A test that panics while holding one: processes stopped, logs kept.
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _plane = runtime.block_on(async {
            let plane = PrivateControlPlane::start().await;
            tx.send(plane.dir().to_path_buf()).unwrap();
            plane
        });
        panic!("a failing test");
    })
    .join();
    assert!(panicked.is_err());
    let dir = rx.recv().unwrap();
    let recorded = pids(&dir);
    assert_eq!(
        running(&recorded),
        Vec::<u32>::new(),
        "processes outlived the panic"
    );
    assert!(
        dir.join("logs/kube-apiserver.log").is_file(),
        "logs not kept"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The processes a control plane recorded in `<dir>/pids`: pid and binary.
fn pids(dir: &Path) -> Vec<(u32, PathBuf)> {
    let file = dir.join("pids");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[0].parse().unwrap(), PathBuf::from(fields[2]))
        })
        .collect()
}

/// Those of `pids` still running their binary (a zombie counts as gone, and
/// so does a pid reused by another program).
fn running(pids: &[(u32, PathBuf)]) -> Vec<u32> {
    pids.iter()
        .filter(|(pid, bin)| {
            let ours = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| &exe == bin);
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            });
            ours && !zombie
        })
        .map(|(pid, _)| *pid)
        .collect()
}
