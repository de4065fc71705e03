//! The controller's client for a real API server, with the fence checked
//! where a write leaves the process: when its body is written out.
//!
//! [`fenced_client`](super::fence::fenced_client) checks a write before
//! handing it to a kube [`Client`], and a lot lies between that check and
//! the socket: the client's request buffer, its retries of 429, 503 and 504
//! (after a backoff or the server's `Retry-After`), a connection from the
//! pool or a new one. A leader paused (or only slow) in there sent its
//! write after a rival had taken the Lease; the e2e test `split_brain`
//! caught one. [`client`] assembles the same stack as kube's own builder
//! with the fence innermost: each attempt (retries included) is checked
//! when handed to hyper, and again when hyper pulls the body to write it.
//!
//! # Caveats
//! - What remains is the distance between hyper pulling the body and the
//!   kernel taking the bytes; a body larger than the socket buffer can
//!   still be paused half-written (the API server then waits for the rest).
//! - A write without a body (kube gives every write one) would be checked only when
//!   handed to hyper.
//! - Proxies are not supported here (nor by the kube features atoll
//!   builds with); client certificates from an exec plugin are not
//!   refreshed on expiry.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use kube::Client;
use kube::client::{Body, ClientBuilder, ConfigExt, retry::RetryPolicy};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use super::fence::{Fence, Fenced, is_write};

/// A kube [`Client`] for `config` whose writes are refused once `fence` is
/// down, checked as close to the wire as hyper allows (see the module
/// docs). Reads, watches included, are not checked.
///
/// # Errors
/// What kube's own `Client::try_from(config)` refuses: unreadable
/// credentials or certificates, a proxy.
pub fn client(config: kube::Config, fence: Fence) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        // kube's builder explains which proxy feature is missing.
        return Client::try_from(config);
    }
    let mut connector = hyper_timeout::TimeoutConnector::new(config.rustls_https_connector()?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: HttpClient<_, FencedBody> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);

    let wire = tower::service_fn(move |request: Request<Body>| {
        let (http, fence) = (http.clone(), fence.clone());
        async move {
            let request = if is_write(request.method()) {
                let fenced = Fenced::of(&request);
                if !fence.is_up() {
                    return Err(BoxError::from(fenced.refused()));
                }
                request.map(|body| FencedBody::new(body, Some((fence, fenced))))
            } else {
                request.map(|body| FencedBody::new(body, None))
            };
            http.request(request).await.map_err(BoxError::from)
        }
    });
    // Outermost first, as in kube's builder; the fence is below the retry.
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .service(wire);
    Ok(ClientBuilder::new(service, config.default_namespace).build())
}

/// A request body that refuses to be written once its fence is down.
struct FencedBody {
    inner: Body,
    /// `None` for reads.
    fence: Option<(Fence, Fenced)>,
}

impl FencedBody {
    fn new(inner: Body, fence: Option<(Fence, Fenced)>) -> Self {
        FencedBody { inner, fence }
    }
}

impl HttpBody for FencedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some((fence, fenced)) = &self.fence
            && !fence.is_up()
        {
            // hyper closes the connection: the API server never gets the
            // whole body, so the write fails there too.
            return Poll::Ready(Some(Err(BoxError::from(fenced.clone().refused()))));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    use super::*;

    const CONFIG_MAP: &str = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#;

    /// A loopback HTTP/1.1 server that records `METHOD path` of every
    /// request it read whole, and answers the first write with 429 and
    /// `Retry-After: 1`, everything else with a ConfigMap.
    async fn server() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let (mut head, mut line) = (Vec::new(), String::new());
                        while read.read_line(&mut line).await.unwrap_or(0) > 2 {
                            head.push(std::mem::take(&mut line));
                        }
                        let Some(request) = head.first() else { return };
                        let length = head
                            .iter()
                            .find_map(|h| {
                                h.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        let mut body = vec![0; length];
                        if read.read_exact(&mut body).await.is_err() {
                            return; // cut off: nothing was written
                        }
                        let request: Vec<_> = request.split([' ', '?']).take(2).collect();
                        let first_write = {
                            let mut log = log.lock().unwrap();
                            log.push(request.join(" "));
                            request[0] != "GET"
                                && log.iter().filter(|r| !r.starts_with("GET")).count() == 1
                        };
                        let answer = if first_write {
                            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n".to_owned()
                        } else {
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CONFIG_MAP}",
                                CONFIG_MAP.len()
                            )
                        };
                        write.write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, seen)
    }

    fn api(url: &str, fence: &Fence) -> Api<ConfigMap> {
        let config = kube::Config::new(url.parse().unwrap());
        Api::namespaced(client(config, fence.clone()).unwrap(), "ns")
    }

    fn patch() -> (PatchParams, Patch<serde_json::Value>) {
        let patch = serde_json::from_str(CONFIG_MAP).unwrap();
        (PatchParams::apply("atoll"), Patch::Apply(patch))
    }

    #[tokio::test]
    async fn a_retry_due_after_the_fence_fell_is_never_sent() {
        let (url, seen) = server().await;
        let fence = Fence::closed();
        fence.extend(Instant::now() + Duration::from_millis(300));
        let (params, patch) = patch();
        // Answered 429 with Retry-After: 1; the retry is due after the
        // fence fell, below the check a wrapper around the client makes.
        let refused = api(&url, &fence)
            .patch("a", &params, &patch)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("fenced"), "{refused}");
        assert_eq!(
            *seen.lock().unwrap(),
            ["PATCH /api/v1/namespaces/ns/configmaps/a"],
            "the first attempt only"
        );
    }

    #[tokio::test]
    async fn writes_pass_while_the_fence_is_up_and_reads_always() {
        let (url, seen) = server().await;
        let fence = Fence::closed();
        fence.extend(Instant::now() + Duration::from_secs(60));
        let api = api(&url, &fence);
        let (params, patch) = patch();
        // 429, then the retry a second later.
        let written = api.patch("a", &params, &patch).await.unwrap();
        assert_eq!(written.metadata.name.as_deref(), Some("a"));
        fence.close();
        assert!(api.patch("a", &params, &patch).await.is_err());
        api.get("a").await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "PATCH /api/v1/namespaces/ns/configmaps/a",
                "PATCH /api/v1/namespaces/ns/configmaps/a",
                "GET /api/v1/namespaces/ns/configmaps/a"
            ]
        );
    }

    #[tokio::test]
    async fn a_body_pulled_after_the_fence_fell_is_refused() {
        use http_body_util::BodyExt;
        let fence = Fence::closed();
        fence.extend(Instant::now() + Duration::from_secs(60));
        let request = Request::patch("/x")
            .body(Body::from(b"{}".to_vec()))
            .unwrap();
        let fenced = Fenced::of(&request);
        let body = |fence: &Fence| {
            let body = Body::from(b"{}".to_vec());
            FencedBody::new(body, Some((fence.clone(), fenced.clone())))
        };
        let sent = body(&fence).collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"{}");
        let late = body(&fence);
        fence.close();
        let refused = late.collect().await.unwrap_err();
        assert!(refused.to_string().contains("fenced"), "{refused}");
        let read = FencedBody::new(Body::from(b"{}".to_vec()), None);
        assert_eq!(&read.collect().await.unwrap().to_bytes()[..], b"{}");
    }
}
