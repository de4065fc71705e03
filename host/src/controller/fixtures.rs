//! An in-memory Kubernetes API for in-process reconcile tests, in the manner
//! of controller-rs's `fixtures.rs`, but stateful: it stores what is written
//! and answers reads from that, so a scenario states what the cluster holds
//! and checks what atoll did to it, whatever the order of requests.
//!
//! It understands what a reconcile sends: LIST with a label selector, GET,
//! server-side apply PATCH of objects and of their `status` subresource
//! (merged into the stored object), DELETE, and POST of Events. Every request
//! is recorded. It is deliberately not a full API server (no validation, no
//! field ownership, no watches): Kubernetes behaviour itself is proven
//! against the real control plane by the e2e tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::sync::MutexExt;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Seen {
    /// Whether this request changes anything (everything but GET).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

#[derive(Default)]
struct State {
    /// By `(plural, namespace, name)`.
    objects: BTreeMap<(String, String, String), Value>,
    seen: Vec<Seen>,
    version: u64,
}

/// The fake API server; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.locked()
    }

    /// Store `object` as if someone created it (`plural` as in the URL).
    pub fn put(&self, plural: &str, object: Value) {
        let mut state = self.state();
        state.version += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        let key = key_of(plural, &object);
        state.objects.insert(key, object);
    }

    /// The stored object, if any.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (plural.into(), namespace.into(), name.into());
        self.state().objects.get(&key).cloned()
    }

    /// `(plural, name)` of every stored object in `namespace`.
    pub fn names(&self, namespace: &str) -> Vec<(String, String)> {
        self.state()
            .objects
            .keys()
            .filter(|(_, ns, _)| ns == namespace)
            .map(|(plural, _, name)| (plural.clone(), name.clone()))
            .collect()
    }

    /// Every request so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Forget the requests seen so far (the store is kept).
    pub fn clear_seen(&self) {
        self.state().seen.clear();
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        self.state().seen.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        let Some(target) = Target::parse(&path) else {
            return respond(StatusCode::NOT_FOUND, status(404, "no such path"));
        };
        match (parts.method, target.name.as_deref()) {
            (Method::GET, None) => respond(StatusCode::OK, self.list(&target, &query)),
            (Method::GET, Some(name)) => match self.get(&target.plural, &target.namespace, name) {
                Some(object) => respond(StatusCode::OK, object),
                None => respond(StatusCode::NOT_FOUND, status(404, "not found")),
            },
            (Method::PATCH, Some(name)) => {
                let patch = body.unwrap_or_default();
                respond(StatusCode::OK, self.apply(&target, name, patch))
            }
            (Method::DELETE, Some(name)) => {
                let key = (target.plural, target.namespace, name.to_string());
                match self.state().objects.remove(&key) {
                    Some(object) => respond(StatusCode::OK, object),
                    None => respond(StatusCode::NOT_FOUND, status(404, "not found")),
                }
            }
            (Method::POST, None) => respond(StatusCode::CREATED, body.unwrap_or_default()),
            _ => respond(StatusCode::METHOD_NOT_ALLOWED, status(405, "unsupported")),
        }
    }

    fn list(&self, target: &Target, query: &str) -> Value {
        let selector = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("labelSelector="))
            .map(|s| {
                s.replace("%3D", "=")
                    .replace("%2C", ",")
                    .replace("%2F", "/")
                    .replace("%21", "!")
            })
            .unwrap_or_default();
        let state = self.state();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((plural, ns, _), _)| *plural == target.plural && *ns == target.namespace)
            .map(|(_, object)| object)
            .filter(|object| matches_selector(object, &selector))
            .cloned()
            .collect();
        json!({"metadata": {"resourceVersion": state.version.to_string()}, "items": items})
    }

    /// Server-side apply, simplified: the patch's fields are merged into
    /// the stored object (created when missing); `status` patches touch
    /// only the status.
    fn apply(&self, target: &Target, name: &str, patch: Value) -> Value {
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        let key = (
            target.plural.clone(),
            target.namespace.clone(),
            name.to_string(),
        );
        let object = state.objects.entry(key).or_insert_with(|| {
            json!({"metadata": {"name": name, "namespace": target.namespace,
                "uid": format!("uid-{version}")}})
        });
        if target.status {
            object["status"] = patch["status"].clone();
        } else {
            merge(object, &patch);
        }
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        object.clone()
    }
}

/// What a request path names: `/api/v1/namespaces/ns/configmaps/x` or
/// `/apis/apps/v1/namespaces/ns/statefulsets/x/status`.
struct Target {
    plural: String,
    namespace: String,
    name: Option<String>,
    status: bool,
}

impl Target {
    fn parse(path: &str) -> Option<Self> {
        let rest = path.split_once("/namespaces/")?.1;
        let mut parts = rest.split('/');
        let namespace = parts.next()?.to_string();
        let plural = parts.next()?.to_string();
        let name = parts.next().map(str::to_string);
        let status = parts.next() == Some("status");
        Some(Target {
            plural,
            namespace,
            name,
            status,
        })
    }
}

fn key_of(plural: &str, object: &Value) -> (String, String, String) {
    let meta = &object["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (plural.into(), text(&meta["namespace"]), text(&meta["name"]))
}

fn matches_selector(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &object["metadata"]["labels"];
        match term.split_once("!=") {
            Some((k, v)) => labels[k].as_str() != Some(v),
            None => match term.split_once('=') {
                Some((k, v)) => labels[k].as_str() == Some(v),
                None => !labels[term].is_null(),
            },
        }
    })
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(into.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

fn status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": "NotFound", "code": code})
}

fn respond(code: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
    *response.status_mut() = code;
    response
}
