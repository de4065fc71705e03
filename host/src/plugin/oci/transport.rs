//! HTTP to one repository of one registry: the scheme the insecure policy
//! allows, the authentication dance (basic, or a bearer token fetched from
//! the realm a 401 names), redirects for blobs, and bodies read under a limit.

use std::time::Duration;

use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::auth::{Challenge, Credentials, parse_challenge, token_from_response};
use super::{InsecurePolicy, OciError, Reference};

/// How long a registry may take to answer a request's headers, or between two
/// chunks of a body, before it counts as unavailable.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Blob downloads are commonly redirected once, to object storage.
const MAX_REDIRECTS: usize = 5;
/// Token answers are small JSON documents.
const MAX_TOKEN_BYTES: u64 = 1 << 20;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Requests to one repository, with the authorization negotiated so far.
pub(super) struct Session<'a> {
    client: HttpClient,
    reference: &'a Reference,
    credentials: Option<&'a Credentials>,
    insecure: &'a InsecurePolicy,
    /// `http(s)://host/v2/<repository>/`.
    base: String,
    /// `pull`, or `pull,push`: the scope asked of token endpoints.
    actions: &'static str,
    authorization: Option<HeaderValue>,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        reference: &'a Reference,
        credentials: Option<&'a Credentials>,
        insecure: &'a InsecurePolicy,
        actions: &'static str,
    ) -> Result<Self, OciError> {
        let scheme = scheme_for(insecure, reference.api_host());
        Ok(Self {
            client: client().map_err(|reason| OciError::RegistryUnavailable {
                registry: reference.registry().to_owned(),
                reason,
            })?,
            base: format!(
                "{scheme}://{}/v2/{}/",
                reference.api_host(),
                reference.repository()
            ),
            reference,
            credentials,
            insecure,
            actions,
            authorization: None,
        })
    }

    /// `base` + `path` (a path relative to the repository, e.g. `manifests/v1`).
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(super) fn registry(&self) -> &str {
        self.reference.registry()
    }

    pub(super) fn unavailable(&self, reason: impl std::fmt::Display) -> OciError {
        OciError::RegistryUnavailable {
            registry: self.reference.registry().to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Sends a request, authenticating once when the registry answers 401,
    /// and following redirects for `GET`. Returns any other answer as is:
    /// the caller knows what 404 means for what it asked.
    pub(super) async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, OciError> {
        let mut url = url.to_owned();
        let mut authenticated = false;
        let mut redirects = 0;
        loop {
            let uri: Uri = url
                .parse()
                .map_err(|e| self.unavailable(format!("bad URL {url}: {e}")))?;
            // Credentials go to the registry only, never to where it redirects.
            let same_host = uri.authority().map(|a| a.as_str()) == Some(self.reference.api_host());
            let mut request = Request::builder().method(method.clone()).uri(uri.clone());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if same_host && let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| self.unavailable(format!("building a request to {url}: {e}")))?;
            let response = self.request(request, &url).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !authenticated {
                authenticated = true;
                self.authenticate(&response).await?;
                continue;
            }
            if status.is_redirection() && method == Method::GET {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(
                        self.unavailable(format!("more than {MAX_REDIRECTS} redirects from {url}"))
                    );
                }
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| {
                        self.unavailable(format!("redirect from {url} without a Location"))
                    })?;
                url = resolve(&uri, location);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let detail = read_error_body(response).await;
                return Err(OciError::Unauthorized {
                    registry: self.reference.registry().to_owned(),
                    reason: format!(
                        "{status} for {} {url}{}{detail}",
                        method,
                        if self.credentials.is_some() {
                            " with the given credentials"
                        } else {
                            " without credentials (give some: a pull Secret)"
                        }
                    ),
                });
            }
            return Ok(response);
        }
    }

    async fn request(
        &self,
        request: Request<Full<Bytes>>,
        url: &str,
    ) -> Result<Response<Incoming>, OciError> {
        match tokio::time::timeout(IDLE_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.unavailable(format!("{url}: {}", error_chain(&e)))),
            Err(_) => Err(self.unavailable(format!("{url}: no answer within {IDLE_TIMEOUT:?}"))),
        }
    }

    /// Answers a 401: basic credentials, or a bearer token from the realm.
    async fn authenticate(&mut self, response: &Response<Incoming>) -> Result<(), OciError> {
        let unauthorized = |reason: String| OciError::Unauthorized {
            registry: self.reference.registry().to_owned(),
            reason,
        };
        // Prefer a bearer challenge when the registry offers several.
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| parse_challenge(v).ok())
            .collect();
        let challenge = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }))
            .or_else(|| challenges.first())
            .ok_or_else(|| {
                unauthorized("401 without a usable WWW-Authenticate challenge".into())
            })?;
        match challenge {
            Challenge::Basic => {
                let credentials = self.credentials.ok_or_else(|| {
                    unauthorized(
                        "the registry asks for credentials (basic auth); give a pull Secret".into(),
                    )
                })?;
                self.authorization = Some(header(&credentials.basic_header())?);
            }
            Challenge::Bearer { realm, service, .. } => {
                let token = self.fetch_token(realm, service.as_deref()).await?;
                self.authorization = Some(header(&format!("Bearer {token}"))?);
            }
        }
        Ok(())
    }

    /// `GET realm?service=…&scope=repository:<repo>:<actions>`, with basic
    /// credentials when there are any (anonymous tokens serve public pulls).
    async fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String, OciError> {
        let realm_uri: Uri = realm
            .parse()
            .map_err(|e| self.unavailable(format!("token realm `{realm}` is not a URL: {e}")))?;
        let realm_host = realm_uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        if realm_uri.scheme_str() != Some("https") && !self.insecure.allows_http(realm_host) {
            return Err(self.unavailable(format!(
                "token realm `{realm}` is not HTTPS and {realm_host} is not an insecure registry"
            )));
        }
        let mut query = vec![format!(
            "scope={}",
            encode(&format!(
                "repository:{}:{}",
                self.reference.repository(),
                self.actions
            ))
        )];
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let mut request = Request::get(&url);
        if let Some(credentials) = self.credentials {
            request = request.header(AUTHORIZATION, credentials.basic_header());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.unavailable(format!("building the token request: {e}")))?;
        let response = self.request(request, &url).await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(OciError::Unauthorized {
                registry: self.reference.registry().to_owned(),
                reason: format!("the token endpoint {realm} refused the credentials ({status})"),
            });
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("the token endpoint {realm} answered {status}")));
        }
        let body = read_limited(response.into_body(), MAX_TOKEN_BYTES)
            .await
            .map_err(|e| self.unavailable(e))?
            .ok_or_else(|| self.unavailable("the token answer is over 1 MiB"))?;
        token_from_response(&body).map_err(|e| self.unavailable(e))
    }
}

/// Plain HTTP only where the policy allows it.
fn scheme_for(insecure: &InsecurePolicy, host: &str) -> &'static str {
    if insecure.allows_http(host) {
        "http"
    } else {
        "https"
    }
}

/// One client per session: pulls are rare (a plugin version is fetched once),
/// so sharing a pool is not worth a global. HTTPS verifies against the
/// system's roots with rustls on ring, as kube's client does.
fn client() -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    // No system roots (a scratch image) leaves HTTPS failing with an unknown
    // issuer, which names the problem; plain HTTP still works.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let tls = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

fn header(value: &str) -> Result<HeaderValue, OciError> {
    HeaderValue::from_str(value).map_err(|_| OciError::InvalidPullSecret {
        reason: "the credentials hold characters not allowed in an HTTP header".into(),
    })
}

/// `location` relative to `base` (absolute URLs, absolute paths and, for
/// completeness, paths relative to the directory).
pub(super) fn resolve(base: &Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("https"),
        base.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{location}")
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A body, or `None` when it is longer than `limit`: never holds more than
/// `limit` bytes, whatever the sender claims or sends.
///
/// # Errors
/// The connection failed or stalled mid-body.
pub(super) async fn read_limited(
    mut body: Incoming,
    limit: u64,
) -> Result<Option<Vec<u8>>, String> {
    let mut bytes = Vec::new();
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(format!("the body stalled for {IDLE_TIMEOUT:?}")),
            Ok(None) => return Ok(Some(bytes)),
            Ok(Some(Err(e))) => return Err(format!("reading the body: {}", error_chain(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > limit {
                return Ok(None);
            }
            bytes.extend_from_slice(&data);
        }
    }
}

/// A registry's error body (JSON `errors`), shortened, for messages.
pub(super) async fn read_error_body(response: Response<Incoming>) -> String {
    match read_limited(response.into_body(), 4096).await {
        Ok(Some(body)) if !body.is_empty() => {
            format!(": {}", String::from_utf8_lossy(&body).trim())
        }
        _ => String::new(),
    }
}

/// An error and its sources, `: `-joined (hyper's top-level messages alone,
/// like "client error (Connect)", do not say what went wrong).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
