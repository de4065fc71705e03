//! Who may call the gRPC API, the Kubernetes way.
//!
//! - **Authentication.** A caller presents a bearer token (`authorization:
//!   Bearer <token>`, a projected ServiceAccount token with audience
//!   [`AUDIENCE`](review::AUDIENCE)), verified by the API server's
//!   `TokenReview`; or, over TLS with a client CA configured, a client
//!   certificate, whose subject common name is the user and whose
//!   organizations are its groups (as the API server reads certificates).
//! - **Authorization.** Each call is one [`Access`] (a verb on an `atoll.dev`
//!   resource in a namespace, the words RBAC and `kubectl auth can-i` use),
//!   decided by the API server's `SubjectAccessReview`.
//! - **Anonymous callers** (legacy Atomix clients send no credentials) may
//!   act only in the namespaces of `--grpc-anonymous-namespaces`; anywhere
//!   else they are `UNAUTHENTICATED`, with a message naming the flag. Any
//!   caller may act in those namespaces.
//!
//! Both answers are cached, bounded ([`CACHE_ENTRIES`] each) and briefly:
//! an accepted token and an allowed access for [`REMEMBER_YES`], a refusal
//! for [`REMEMBER_NO`]. So a revoked token or binding keeps working for at
//! most that long, and a warm call costs no API request.

mod cache;
mod cert;
pub mod review;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::Client;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

use cache::TtlCache;

/// How long an accepted token and an allowed access are remembered.
pub const REMEMBER_YES: Duration = Duration::from_secs(30);
/// How long a refused token and a denied access are remembered.
pub const REMEMBER_NO: Duration = Duration::from_secs(5);
/// Entries each cache holds at most.
pub const CACHE_ENTRIES: usize = 10_000;

/// How the gRPC API checks its callers.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Check callers (off only where a program measures the cost of the
    /// checks; `atoll run` always checks).
    pub enabled: bool,
    /// Namespaces where callers without credentials may act.
    pub anonymous_namespaces: BTreeSet<String>,
}

impl AuthConfig {
    /// Every call authenticated and authorized; anonymous callers in
    /// `anonymous_namespaces` only.
    pub fn kubernetes<S: Into<String>>(anonymous_namespaces: impl IntoIterator<Item = S>) -> Self {
        AuthConfig {
            enabled: true,
            anonymous_namespaces: anonymous_namespaces.into_iter().map(Into::into).collect(),
        }
    }

    /// No checks at all: only to measure what the checks cost.
    pub fn disabled() -> Self {
        AuthConfig {
            enabled: false,
            anonymous_namespaces: BTreeSet::new(),
        }
    }
}

/// One thing a call does: `verb` on `resource` (group `atoll.dev`) in
/// `namespace` (`None`: across every namespace, or a cluster-scoped
/// resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: Option<String>,
}

impl Access {
    pub fn new(verb: &'static str, resource: &'static str, namespace: &str) -> Self {
        Access {
            verb,
            resource,
            namespace: Some(namespace.to_string()),
        }
    }

    /// Across every namespace, or on a cluster-scoped resource.
    pub fn cluster(verb: &'static str, resource: &'static str) -> Self {
        Access {
            verb,
            resource,
            namespace: None,
        }
    }

    /// As the API server words a refusal (and `kubectl auth can-i` asks).
    fn refused(&self, user: &str) -> String {
        let place = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let check = match &self.namespace {
            Some(ns) => format!("-n {ns}"),
            None => "--all-namespaces".to_string(),
        };
        format!(
            "User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"atoll.dev\" {place} \
             (kubectl auth can-i {verb} {resource}.atoll.dev {check} --as {user}; a Role or ClusterRole binding grants it)",
            verb = self.verb,
            resource = self.resource,
        )
    }
}

/// A caller the API server knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Bearer(String),
    /// From a client certificate the TLS handshake verified.
    Certificate(User),
    /// Something was presented but cannot be used; why.
    Malformed(String),
}

impl Credentials {
    /// The credentials of `request`: its `authorization` header, else its
    /// verified client certificate.
    pub fn of<T>(request: &Request<T>) -> Self {
        if let Some(value) = request.metadata().get("authorization") {
            let Ok(value) = value.to_str() else {
                return Credentials::Malformed("the authorization header is not text".into());
            };
            return match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Credentials::Bearer(token.trim().to_string())
                }
                _ => Credentials::Malformed(
                    "the authorization header must be `Bearer <token>`".into(),
                ),
            };
        }
        match request.peer_certs() {
            Some(chain) => match chain.first().map(|c| cert::user(c.as_ref())) {
                Some(Ok(user)) => Credentials::Certificate(user),
                Some(Err(why)) => Credentials::Malformed(why),
                None => Credentials::None,
            },
            None => Credentials::None,
        }
    }
}

/// Where a list across namespaces may look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    pub fn includes(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(namespaces) => namespaces.contains(namespace),
        }
    }
}

/// Checks callers against the API server, remembering its answers.
pub struct Auth {
    client: Client,
    config: AuthConfig,
    /// sha256 of a token → its user, or why it was refused.
    tokens: TtlCache<[u8; 32], Result<User, String>>,
    decisions: TtlCache<(User, Access), bool>,
}

impl Auth {
    pub fn new(client: Client, config: AuthConfig) -> Self {
        Auth {
            client,
            config,
            tokens: TtlCache::new(CACHE_ENTRIES),
            decisions: TtlCache::new(CACHE_ENTRIES),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// May the caller presenting `credentials` do `access`?
    ///
    /// # Errors
    /// `UNAUTHENTICATED` (no usable credentials where anonymous callers may
    /// not act, or a token the API server refuses), `PERMISSION_DENIED`
    /// (naming what would be needed), `UNAVAILABLE` (the API server could
    /// not be asked).
    pub async fn check(&self, credentials: &Credentials, access: Access) -> Result<(), Status> {
        if !self.config.enabled {
            return Ok(());
        }
        let anonymous_ok = access
            .namespace
            .as_ref()
            .is_some_and(|ns| self.config.anonymous_namespaces.contains(ns));
        if anonymous_ok {
            return Ok(());
        }
        let user = self.authenticate(credentials, &access).await?;
        if self.allowed(&user, &access).await? {
            Ok(())
        } else {
            Err(Status::permission_denied(access.refused(&user.name)))
        }
    }

    /// Where a list of `resource` across every namespace may look: all of
    /// them if the caller may `verb` it cluster-wide, else the anonymous
    /// namespaces (where anyone may), else refused.
    ///
    /// # Errors
    /// As [`Auth::check`].
    pub async fn scope(
        &self,
        credentials: &Credentials,
        verb: &'static str,
        resource: &'static str,
    ) -> Result<Scope, Status> {
        if !self.config.enabled {
            return Ok(Scope::All);
        }
        let access = Access::cluster(verb, resource);
        let anonymous = &self.config.anonymous_namespaces;
        if *credentials == Credentials::None && !anonymous.is_empty() {
            return Ok(Scope::Only(anonymous.clone()));
        }
        let user = self.authenticate(credentials, &access).await?;
        if self.allowed(&user, &access).await? {
            Ok(Scope::All)
        } else if !anonymous.is_empty() {
            Ok(Scope::Only(anonymous.clone()))
        } else {
            Err(Status::permission_denied(access.refused(&user.name)))
        }
    }

    async fn authenticate(
        &self,
        credentials: &Credentials,
        access: &Access,
    ) -> Result<User, Status> {
        let token = match credentials {
            Credentials::None => {
                return Err(Status::unauthenticated(self.anonymous_refused(access)));
            }
            Credentials::Malformed(why) => return Err(Status::unauthenticated(why.clone())),
            Credentials::Certificate(user) => return Ok(user.clone()),
            Credentials::Bearer(token) => token,
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let reviewed = match self.tokens.get(&key, now) {
            Some(known) => known,
            None => {
                let reviewed = review::token(&self.client, token).await.map_err(|e| {
                    Status::unavailable(format!("cannot verify the token (TokenReview): {e}"))
                })?;
                let ttl = if reviewed.is_ok() {
                    REMEMBER_YES
                } else {
                    REMEMBER_NO
                };
                self.tokens.insert(key, reviewed.clone(), ttl, now);
                reviewed
            }
        };
        reviewed.map_err(|why| {
            Status::unauthenticated(format!(
                "the bearer token was refused by the Kubernetes API server: {why} \
                 (use a ServiceAccount token for audience {aud}: kubectl create token <sa> --audience {aud}, \
                 or a projected token volume with audience {aud})",
                aud = review::AUDIENCE
            ))
        })
    }

    async fn allowed(&self, user: &User, access: &Access) -> Result<bool, Status> {
        let key = (user.clone(), access.clone());
        let now = Instant::now();
        if let Some(allowed) = self.decisions.get(&key, now) {
            return Ok(allowed);
        }
        let allowed = review::access(&self.client, user, access)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "cannot authorize the call (SubjectAccessReview): {e}"
                ))
            })?;
        let ttl = if allowed { REMEMBER_YES } else { REMEMBER_NO };
        self.decisions.insert(key, allowed, ttl, now);
        Ok(allowed)
    }

    fn anonymous_refused(&self, access: &Access) -> String {
        let listed = &self.config.anonymous_namespaces;
        let allowed = match listed.is_empty() {
            true => "no namespace (atoll runs without --grpc-anonymous-namespaces)".to_string(),
            false => format!(
                "only {} (--grpc-anonymous-namespaces)",
                listed.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let place = match &access.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "across namespaces".to_string(),
        };
        format!(
            "no credentials: calls {place} need a bearer token (a ServiceAccount token with audience {aud}, \
             as `authorization: Bearer <token>`) or a client certificate; callers without credentials may act in {allowed}",
            aud = review::AUDIENCE
        )
    }
}

#[cfg(test)]
mod tests;
