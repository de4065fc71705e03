//! Without a control plane, tests fail with instructions instead of skipping.
//! Its own test binary, not a module of `tests/all`: it sets
//! `ATOLL_TESTENV_DIR` to an empty state directory and removes `KUBECONFIG`
//! from the process environment, which must not leak into tests that need
//! the real control plane (and changing the environment is only sound while
//! no other thread runs).

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used)]

#[test]
fn client_panics_with_instructions_when_no_control_plane_runs() {
    let empty = std::env::temp_dir().join(format!("atoll-testenv-missing-{}", std::process::id()));
    // SAFETY: this binary's only test, and no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("ATOLL_TESTENV_DIR", &empty);
        std::env::remove_var("KUBECONFIG");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(atoll_testenv::client());
    }))
    .expect_err("client() must panic when there is no control plane");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("cargo xtask cluster up"), "{message}");
    assert!(
        message.contains("eval \"$(cargo xtask cluster env)\""),
        "{message}"
    );
    assert!(
        message.contains(&empty.join("kubeconfig").display().to_string()),
        "{message}"
    );
}
