//! The operator's HTTP endpoints for Prometheus and the kubelet:
//!
//! - `GET /metrics`: [`Metrics::encode`] with the OpenMetrics content type;
//! - `GET /healthz`: `200 ok` for as long as the process serves requests
//!   (a liveness probe: it fails only when the process is wedged or gone);
//! - `GET /readyz`: `200 ok` while the readiness flag is `true`, else
//!   `503 not ready` (a readiness probe).
//!
//! Anything else is `404`. The server speaks HTTP/1.1 only, without TLS:
//! bind it to the pod's address and let a NetworkPolicy decide who scrapes.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Why the endpoints could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Accepting or serving connections failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    ready: watch::Receiver<bool>,
}

/// The routes, for embedding in another server or testing without a socket.
pub fn router(metrics: Metrics, ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if *state.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `addr` and serves the endpoints until `shutdown` resolves (see
/// [`serve_on`]). Fails at once if `addr` cannot be bound.
///
/// # Errors
/// `addr` cannot be bound, or the server fails.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(listener, metrics, ready, shutdown).await
}

/// Serves the endpoints on an already bound `listener` until `shutdown`
/// resolves (bind `127.0.0.1:0` and read `local_addr` to get a free port).
///
/// `ready` is read on every `/readyz` request: the latest value counts, and
/// the last value stays in force if its sender is dropped.
///
/// Graceful shutdown: once `shutdown` resolves no new connection is accepted,
/// idle keep-alive connections are closed, and requests in flight are
/// answered before this returns. A client that holds a connection open with
/// an unfinished request delays the return; callers that must not wait
/// should bound this with a timeout.
///
/// # Errors
/// The server fails.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// One `GET path` over a fresh TCP connection: (status, headers, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connecting");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("a response within 10s")
        .expect("reading the response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn endpoints_over_tcp_and_graceful_shutdown() {
        let metrics = Metrics::new();
        metrics.applied("StatefulSet");
        let (ready_tx, ready_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(listener, metrics.clone(), ready_rx, async {
            let _ = stop_rx.await;
        }));

        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready"));
        ready_tx.send(true).unwrap();
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        metrics.pruned("ConfigMap"); // recorded after the server started
        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains(&format!("content-type: {CONTENT_TYPE}")),
            "{head}"
        );
        assert!(
            body.contains(r#"atoll_objects_applied_total{kind="StatefulSet"} 1"#),
            "{body}"
        );
        assert!(
            body.contains(r#"atoll_objects_pruned_total{kind="ConfigMap"} 1"#),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (status, _, _) = get(addr, "/nope").await;
        assert_eq!(status, 404);

        // The readiness flag keeps its last value when its sender goes away.
        drop(ready_tx);
        let (status, _, _) = get(addr, "/readyz").await;
        assert_eq!(status, 200);

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops within 5s of shutdown")
            .unwrap()
            .expect("serving ended cleanly");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nothing listens after shutdown"
        );
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, Metrics::new(), watch::channel(true).1, async {})
            .await
            .unwrap_err();
        assert!(matches!(err, ServeError::Bind { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
