//! An in-process registry speaking just enough of the distribution API for
//! the client's tests, with knobs to misbehave (tamper with blobs, lie about
//! manifests, demand credentials, redirect downloads).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic(String, String),
    /// Bearer tokens from `/token`, which wants these basic credentials.
    Bearer(String, String),
}

#[derive(Default)]
pub struct Knobs {
    pub auth: Auth,
    /// Served for every blob `GET` instead of the stored bytes.
    pub tampered_blob: Option<Vec<u8>>,
    /// Served for every manifest `GET` by digest instead of the stored one.
    pub lying_manifest: Option<Vec<u8>>,
    /// Blob downloads redirect to this server (`http://addr/blob/<digest>`).
    pub redirect_blobs_to: Option<SocketAddr>,
    /// Every request answers this status.
    pub fail_with: Option<u16>,
}

#[derive(Default)]
pub struct Fake {
    pub knobs: Mutex<Knobs>,
    pub blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// Tag or digest → (media type, body).
    pub manifests: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Scopes the token endpoint was asked for.
    pub scopes: Mutex<Vec<String>>,
    /// `Authorization` headers seen on redirected downloads.
    pub redirected_auth: Mutex<Vec<Option<String>>>,
}

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Starts a fake registry on a loopback port.
pub async fn start(knobs: Knobs) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake {
        knobs: Mutex::new(knobs),
        ..Fake::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(handle).with_state(Arc::clone(&fake));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, addr)
}

impl Fake {
    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        self.blobs
            .lock()
            .unwrap()
            .insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// Stores a manifest under its digest and, if given, a tag.
    pub fn put_manifest(&self, tag: Option<&str>, media_type: &str, body: &[u8]) -> String {
        let digest = sha(body);
        let mut manifests = self.manifests.lock().unwrap();
        manifests.insert(digest.clone(), (media_type.into(), body.to_vec()));
        if let Some(tag) = tag {
            manifests.insert(tag.into(), (media_type.into(), body.to_vec()));
        }
        digest
    }
}

fn answer(status: u16, headers: &[(&str, String)], body: impl Into<Body>) -> Response {
    let mut response = Response::builder().status(status);
    for (k, v) in headers {
        response = response.header(*k, v);
    }
    response.body(body.into()).unwrap()
}

async fn handle(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let auth_header = parts
        .headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let host = parts
        .headers
        .get("host")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let knobs = fake.knobs.lock().unwrap();
    if let Some(status) = knobs.fail_with {
        return answer(status, &[], "failing on purpose");
    }
    if let Some(digest) = path.strip_prefix("/blob/") {
        fake.redirected_auth.lock().unwrap().push(auth_header);
        return match fake.blobs.lock().unwrap().get(digest) {
            Some(bytes) => answer(200, &[], bytes.clone()),
            None => answer(404, &[], ""),
        };
    }
    if path == "/token" {
        let Auth::Bearer(user, password) = &knobs.auth else {
            return answer(404, &[], "");
        };
        let expected = basic(user, password);
        if auth_header.as_deref() != Some(expected.as_str()) {
            return answer(401, &[], "bad credentials");
        }
        fake.scopes.lock().unwrap().push(query);
        return answer(200, &[], r#"{"token":"good-token","expires_in":300}"#);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return answer(404, &[], "");
    };
    let challenge = match &knobs.auth {
        Auth::Anonymous => None,
        Auth::Basic(user, password) => (auth_header.as_deref()
            != Some(basic(user, password).as_str()))
        .then(|| r#"Basic realm="fake""#.to_owned()),
        Auth::Bearer(..) => (auth_header.as_deref() != Some("Bearer good-token")).then(|| {
            format!(
                r#"Bearer realm="http://{host}/token",service="fake",scope="repository:x:pull""#
            )
        }),
    };
    if let Some(challenge) = challenge {
        return answer(
            401,
            &[("www-authenticate", challenge)],
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        );
    }
    let method = parts.method.as_str();
    if let Some((_, reference)) = rest.rsplit_once("/manifests/") {
        if method == "PUT" {
            let media_type = parts
                .headers
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let digest = fake.put_manifest(Some(reference), &media_type, &body);
            return answer(201, &[("docker-content-digest", digest)], "");
        }
        let lie = reference
            .starts_with("sha256:")
            .then(|| knobs.lying_manifest.clone())
            .flatten();
        return match fake.manifests.lock().unwrap().get(reference) {
            Some((media_type, stored)) => answer(
                200,
                &[("content-type", media_type.clone())],
                lie.unwrap_or_else(|| stored.clone()),
            ),
            None => answer(404, &[], r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
        };
    }
    if rest.ends_with("/blobs/uploads/") && method == "POST" {
        return answer(
            202,
            &[("location", format!("/v2/{rest}some-upload-id?state=x"))],
            "",
        );
    }
    if rest.contains("/blobs/uploads/") && method == "PUT" {
        let digest = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("digest="))
            .map(|d| d.replace("%3A", ":"))
            .unwrap_or_default();
        if !query.contains("state=x") || digest != sha(&body) {
            return answer(400, &[], r#"{"errors":[{"code":"DIGEST_INVALID"}]}"#);
        }
        fake.put_blob(&body);
        return answer(201, &[("docker-content-digest", digest)], "");
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        if let Some(to) = knobs.redirect_blobs_to {
            return answer(
                307,
                &[("location", format!("http://{to}/blob/{digest}"))],
                "",
            );
        }
        return match (&knobs.tampered_blob, fake.blobs.lock().unwrap().get(digest)) {
            (Some(tampered), Some(_)) => answer(200, &[], tampered.clone()),
            (None, Some(bytes)) => answer(200, &[], bytes.clone()),
            (_, None) => answer(404, &[], r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#),
        };
    }
    answer(404, &[], "")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
