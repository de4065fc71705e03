//! The gRPC API served by `atoll run` (default port 5679):
//!
//! - `atomix.database.DatabaseService`, `atomix.membership.MembershipService`
//!   and `atomix.primitive.PrimitiveService`, wire-compatible with the Atomix 4
//!   controller API (atomix/api v0.3.3) so existing Atomix clients work;
//! - `atoll.v1alpha1.PluginService`: loaded plugins and dry-run renders;
//! - `grpc.health.v1.Health`, SERVING only while the readiness channel says
//!   true, and server reflection (v1 and v1alpha).
//!
//! The protos are in `host/proto`; `host/build.rs` compiles them. Every
//! service reads and writes atoll's custom resources through the Kubernetes
//! API, so any replica can serve any request; lists come from watch caches
//! ([`Caches`]). See `docs/grpc.md`.

pub mod auth;
mod caches;
mod database;
mod error;
mod limits;
mod membership;
mod plugins;
mod primitive;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::metrics::Metrics;
use crate::render::Renderer;

pub use auth::{Auth, AuthConfig};
pub use caches::{Caches, SYNC_WAIT};
pub use database::DatabaseApi;
pub use error::{GrpcError, MAX_STATUS_MESSAGE};
pub use limits::GrpcLimits;
pub use membership::{LEASE_PREFIX, Liveness, MembershipApi};
pub use plugins::PluginApi;
pub use primitive::PrimitiveApi;

/// Messages and services generated from `host/proto`, by package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/atoll.grpc.rs"));
}

use proto::atoll::v1alpha1::plugin_service_server::PluginServiceServer;
use proto::atomix::database::database_service_server::DatabaseServiceServer;
use proto::atomix::membership::membership_service_server::MembershipServiceServer;
use proto::atomix::primitive::primitive_service_server::PrimitiveServiceServer;

/// Encoded `FileDescriptorSet` of `host/proto`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/atoll_descriptor.bin"));

/// Largest request message accepted; a bigger one fails with
/// RESOURCE_EXHAUSTED before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The fully qualified names of the application services, which health
/// reports on individually (plus `""` for the whole server).
pub const SERVICES: [&str; 4] = [
    <DatabaseServiceServer<DatabaseApi> as NamedService>::NAME,
    <MembershipServiceServer<MembershipApi> as NamedService>::NAME,
    <PrimitiveServiceServer<PrimitiveApi> as NamedService>::NAME,
    <PluginServiceServer<PluginApi> as NamedService>::NAME,
];

/// PEM files of the server certificate (chain) and its private key, and
/// optionally of the CA whose client certificates identify callers (mutual
/// TLS; callers may still present a bearer token instead).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Why the gRPC server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read TLS {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The gRPC server and what its services need.
pub struct Server {
    pub client: Client,
    /// Its registry answers PluginService; its cluster domain builds
    /// partition endpoints (the same one the controller writes into status).
    pub renderer: Arc<Renderer>,
    /// Health is SERVING while this is true (atoll's `/readyz` readiness).
    pub ready: watch::Receiver<bool>,
    pub tls: Option<TlsFiles>,
    /// Who may call (see [`auth`]).
    pub auth: AuthConfig,
    /// Connections, streams and call rates at most.
    pub limits: GrpcLimits,
    /// Where the membership service counts its streams, records and
    /// watches (the same metrics `/metrics` serves).
    pub metrics: Metrics,
    /// This process's instance Lease, and the sweep of the Member records
    /// of instances that are gone.
    pub liveness: Liveness,
    /// The namespace atoll manages (`--namespace`), which the watch caches
    /// of Databases, Partitions and Primitives cover; `None`: every one.
    pub namespace: Option<String>,
}

/// How long shutdown waits for the Member records of ended streams to be
/// deleted (1,000 take about a second); `atoll run` gives the whole gRPC
/// shutdown 5 s.
const LEAVE_GRACE: Duration = Duration::from_secs(4);

impl Server {
    /// Serve on `listener` until `shutdown` resolves. On shutdown, health
    /// turns NOT_SERVING and open JoinGroup streams end (their members
    /// leave), so graceful shutdown does not wait on endless streams; then
    /// this waits (at most `LEAVE_GRACE`, 4 s) until their Member records are
    /// deleted, and deletes this process's instance Lease.
    ///
    /// # Errors
    /// TLS files cannot be read, the reflection service cannot be built, or the transport fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(self.limits.max_streams_per_connection))
            // Notice clients that vanished without closing the connection,
            // so their JoinGroup streams end and their members leave.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(tower::util::MapResponseLayer::new(
                oversized_is_resource_exhausted,
            ));
        if let Some(tls) = &self.tls {
            let read = |what, path: &PathBuf| {
                std::fs::read(path).map_err(|source| ServeError::TlsFile {
                    what,
                    path: path.clone(),
                    source,
                })
            };
            let identity = tonic::transport::Identity::from_pem(
                read("certificate", &tls.cert)?,
                read("key", &tls.key)?,
            );
            let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &tls.client_ca {
                config = config
                    .client_ca_root(tonic::transport::Certificate::from_pem(read(
                        "client CA",
                        ca,
                    )?))
                    .client_auth_optional(true);
            }
            builder = builder.tls_config(config)?;
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let (reporter, health) = tonic_health::server::health_reporter();
        // The reporter starts "" as SERVING: settle it before accepting calls.
        let ready_now = *self.ready.borrow();
        report_health(&reporter, ready_now).await;
        tokio::spawn(follow_readiness(reporter, self.ready.clone()));

        // Each reflection version lists the services of the descriptors it
        // knows; register the other version's so both list everything.
        let reflection = |other: &'static [u8]| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(other)
        };
        use tonic_reflection::pb::{v1, v1alpha};
        let domain = self.renderer.cluster_domain.clone();
        let auth = Arc::new(Auth::new(self.client.clone(), self.auth, &self.limits));
        let caches = Arc::new(Caches::start(&self.client, self.namespace.as_deref()));
        let (membership, members) = MembershipApi::new(
            self.client.clone(),
            self.metrics.clone(),
            stop_rx,
            self.liveness.clone(),
            Arc::clone(&auth),
        );
        let router = builder
            .add_service(
                DatabaseServiceServer::new(DatabaseApi::new(
                    self.client.clone(),
                    domain,
                    Arc::clone(&auth),
                    Arc::clone(&caches),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                MembershipServiceServer::new(membership)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                PrimitiveServiceServer::new(PrimitiveApi::new(
                    self.client.clone(),
                    Arc::clone(&auth),
                    caches,
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                PluginServiceServer::new(PluginApi::new(Arc::clone(&self.renderer), auth))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(health.max_decoding_message_size(MAX_MESSAGE_BYTES))
            .add_service(
                reflection(v1alpha::FILE_DESCRIPTOR_SET)
                    .build_v1()?
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                reflection(v1::FILE_DESCRIPTOR_SET)
                    .build_v1alpha()?
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            );

        let incoming = limits::limited(listener, self.limits.max_connections);
        router
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await?;
        // Every stream has ended and the service is gone: the leaver ends
        // once it has deleted their records.
        if !members.finish(LEAVE_GRACE).await {
            tracing::warn!(
                "Member records of ended JoinGroup streams were not all deleted within {LEAVE_GRACE:?}"
            );
        }
        Ok(())
    }
}

/// tonic refuses a request over the size limit with OUT_OF_RANGE; the gRPC
/// spec (and every other gRPC server) says RESOURCE_EXHAUSTED, which is what
/// clients retry and alert on. Such refusals are trailers-only responses, so
/// the status is in the headers.
fn oversized_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|s| s == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        // Percent-encoded on the wire (tonic encodes spaces).
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Mirror readiness into health until the readiness sender goes away (the
/// process is stopping), then report NOT_SERVING.
async fn follow_readiness(
    reporter: tonic_health::server::HealthReporter,
    mut ready: watch::Receiver<bool>,
) {
    loop {
        let now = *ready.borrow_and_update();
        report_health(&reporter, now).await;
        if ready.changed().await.is_err() {
            report_health(&reporter, false).await;
            return;
        }
    }
}

async fn report_health(reporter: &tonic_health::server::HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// `namespace`, or `default` when empty (as kubectl does).
fn namespace_or_default(namespace: &str) -> &str {
    if namespace.is_empty() {
        "default"
    } else {
        namespace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &'static str, message: &'static str) -> http::Response<()> {
        http::Response::builder()
            .header("grpc-status", status)
            .header("grpc-message", message)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_oversized_requests_become_resource_exhausted() {
        let oversized = response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%205242880%20bytes",
        );
        let fixed = oversized_is_resource_exhausted(oversized);
        assert_eq!(fixed.headers()["grpc-status"], "8");
        let other = oversized_is_resource_exhausted(response("11", "partition out of range"));
        assert_eq!(other.headers()["grpc-status"], "11");
        let not_found = oversized_is_resource_exhausted(response("5", "message length too large"));
        assert_eq!(not_found.headers()["grpc-status"], "5");
    }

    #[test]
    fn the_descriptor_set_holds_every_proto() {
        use prost::Message;
        let set = tonic_prost_build_free_decode(FILE_DESCRIPTOR_SET);
        for package in [
            "atomix.database",
            "atomix.membership",
            "atomix.primitive",
            "atoll.v1alpha1",
        ] {
            assert!(set.iter().any(|p| p == package), "{package} in {set:?}");
        }

        /// Package names in an encoded FileDescriptorSet (field 1: files;
        /// field 2 of each file: package), read with prost's own decoder.
        fn tonic_prost_build_free_decode(bytes: &[u8]) -> Vec<String> {
            #[derive(Clone, PartialEq, Message)]
            struct Set {
                #[prost(message, repeated, tag = "1")]
                file: Vec<File>,
            }
            #[derive(Clone, PartialEq, Message)]
            struct File {
                #[prost(string, tag = "2")]
                package: String,
            }
            Set::decode(bytes)
                .unwrap()
                .file
                .into_iter()
                .map(|f| f.package)
                .collect()
        }
    }
}
