//! The OCI registries beside the control plane (CNCF Distribution, one
//! anonymous and one with basic auth; see `cargo xtask cluster up`).

pub use xtask::cluster::{
    REGISTRY_AUTH_ENV, REGISTRY_ENV, REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, Registries,
};

/// The registries: `$ATOLL_TESTENV_REGISTRY*`, else `registry/env` in the
/// state directory of the kubeconfig in use (where `cluster up` writes it).
/// Panics, saying how to start them, when neither is there: tests that need
/// a registry fail loudly rather than pass by skipping.
pub fn registries() -> Registries {
    let from_env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    if let (Some(anonymous), Some(authenticated), Some(user), Some(password)) = (
        from_env(REGISTRY_ENV),
        from_env(REGISTRY_AUTH_ENV),
        from_env(REGISTRY_USER_ENV),
        from_env(REGISTRY_PASSWORD_ENV),
    ) {
        return Registries {
            anonymous,
            authenticated,
            user,
            password,
        };
    }
    let kubeconfig = std::env::split_paths(&crate::kubeconfig_env())
        .next()
        .unwrap_or_default();
    let file = kubeconfig
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("registry")
        .join("env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "no test registries: ${REGISTRY_ENV}* are unset and {} cannot be read ({e}); \
             start them with `cargo xtask cluster up` (it adds them to a running control plane) \
             and `eval \"$(cargo xtask cluster env)\"`",
            file.display()
        )
    });
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{} has no {key}", file.display()))
    };
    Registries {
        anonymous: get(REGISTRY_ENV),
        authenticated: get(REGISTRY_AUTH_ENV),
        user: get(REGISTRY_USER_ENV),
        password: get(REGISTRY_PASSWORD_ENV),
    }
}
