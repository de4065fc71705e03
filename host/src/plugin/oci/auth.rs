//! Registry credentials: pull Secrets (`kubernetes.io/dockerconfigjson`)
//! and the `WWW-Authenticate` challenges registries answer 401 with.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::OciError;
use super::reference::DOCKER_HUB;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or access token used as a password), sent as
    /// HTTP basic auth or exchanged for a bearer token, as the registry asks.
    Basic { user: String, password: String },
}

// The password stays out of logs and error messages.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// The key of the Secret data that holds a `kubernetes.io/dockerconfigjson` Secret's config.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// The credentials for `registry` (as written in the reference, e.g.
    /// `registry.example.com:5000` or `docker.io`) in the contents of a
    /// `.dockerconfigjson`. Keys may carry a scheme and a path
    /// (`https://index.docker.io/v1/` is Docker Hub); an entry's `auth`
    /// (base64 `user:password`) wins over its `username`/`password`.
    /// `Ok(None)` when the config has no entry for the registry.
    ///
    /// # Errors
    /// [`OciError::InvalidPullSecret`] when the JSON or the matching entry is malformed.
    pub fn from_docker_config_json(json: &[u8], registry: &str) -> Result<Option<Self>, OciError> {
        let bad = |reason: String| OciError::InvalidPullSecret { reason };
        let config: DockerConfig = serde_json::from_slice(json).map_err(|e| {
            bad(format!(
                "{DOCKER_CONFIG_JSON_KEY} is not a Docker config: {e}"
            ))
        })?;
        let wanted = normalize_host(registry);
        let Some((key, entry)) = config
            .auths
            .iter()
            .find(|(key, _)| normalize_host(key) == wanted)
        else {
            return Ok(None);
        };
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("auths[{key:?}].auth is not base64: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| bad(format!("auths[{key:?}].auth is not UTF-8 once decoded")))?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| {
                bad(format!(
                    "auths[{key:?}].auth decodes to no `user:password` pair"
                ))
            })?;
            return Ok(Some(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }));
        }
        match (&entry.username, &entry.password) {
            (Some(user), Some(password)) => Ok(Some(Credentials::Basic {
                user: user.clone(),
                password: password.clone(),
            })),
            _ => Err(bad(format!(
                "auths[{key:?}] has neither `auth` nor `username` and `password`"
            ))),
        }
    }

    /// The `Authorization` header value for basic auth.
    pub(super) fn basic_header(&self) -> String {
        match self {
            Credentials::Basic { user, password } => {
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
            }
        }
    }

    /// A `.dockerconfigjson` holding these credentials for `registry`, as
    /// `kubectl create secret docker-registry` writes it.
    pub fn to_docker_config_json(&self, registry: &str) -> Vec<u8> {
        let Credentials::Basic { user, password } = self;
        let auth = STANDARD.encode(format!("{user}:{password}"));
        serde_json::json!({ "auths": { registry: { "username": user, "password": password, "auth": auth } } })
            .to_string()
            .into_bytes()
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.into(),
        _ => host,
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
/// Quoted values may hold commas (`scope="repository:a:pull,push"`) and
/// backslash escapes.
///
/// # Errors
/// A description of what is malformed or unsupported.
pub(super) fn parse_challenge(header: &str) -> Result<Challenge, String> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("basic") && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "unsupported authentication scheme `{scheme}` in `{header}`"
        ));
    }
    let params = parse_params(rest)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    let realm = get("realm").ok_or_else(|| format!("bearer challenge `{header}` has no realm"))?;
    Ok(Challenge::Bearer {
        realm,
        service: get("service"),
        scope: get("scope"),
    })
}

fn parse_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("parameter `{}` has no value", key.trim()));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of `{}`", key.trim())),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        params.push((key.trim().to_owned(), value));
    }
}

/// The bearer token in a token endpoint's answer (`token`, or the OAuth2 `access_token`).
pub(super) fn token_from_response(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the token endpoint answered no JSON: {e}"))?;
    parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the token endpoint's answer has no `token` nor `access_token`".to_owned())
}
