//! DNS queries against the CoreDNS that `cargo xtask cluster up` runs
//! beside the control plane (its `kubernetes` plugin serves `cluster.local`
//! from the API server, as the cluster DNS of a real cluster does).
//!
//! Messages are built and parsed by `hickory-proto`; the transport is a
//! plain UDP exchange (with EDNS, so SRV answers for many partitions fit),
//! repeated over TCP when the answer comes back truncated. No caching: every
//! call asks the server.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable holding CoreDNS's `127.0.0.1:<port>` (`cargo xtask cluster env` prints it).
pub const DNS_ENV: &str = "ATOLL_TESTENV_DNS";

/// How long one attempt waits for an answer.
const ATTEMPT: Duration = Duration::from_secs(2);

/// One SRV record: where and how to reach one instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    /// Fully qualified, without the trailing dot.
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// A DNS client for the test environment's CoreDNS.
#[derive(Debug, Clone, Copy)]
pub struct Dns {
    server: SocketAddr,
}

impl Dns {
    /// CoreDNS of the control plane in use, checked to answer: it must
    /// resolve `kubernetes.default.svc.cluster.local`, which every control
    /// plane has. Panics, saying how to start it, when its address is
    /// unknown or it does not answer: DNS tests fail, they never skip.
    pub async fn connect() -> Self {
        let dns = Dns {
            server: server_address(),
        };
        let name = "kubernetes.default.svc.cluster.local";
        match dns.a(name).await {
            Ok(ips) if !ips.is_empty() => dns,
            Ok(_) => panic!(
                "CoreDNS at {} answers but does not resolve {name}: is its `kubernetes` plugin \
                 pointed at this control plane? (see logs/coredns.log in the state directory)",
                dns.server
            ),
            Err(e) => panic!(
                "CoreDNS at {} does not answer: {e}\nstart it with `cargo xtask cluster up` \
                 (it adds CoreDNS to a running control plane)",
                dns.server
            ),
        }
    }

    /// A client for `server`, unchecked.
    pub fn at(server: SocketAddr) -> Self {
        Dns { server }
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The SRV records of `name`, sorted by target; empty when the name does
    /// not exist (NXDOMAIN) or has none.
    ///
    /// # Errors
    /// No answer, an unparseable answer, or an error code other than NXDOMAIN.
    pub async fn srv(&self, name: &str) -> Result<Vec<Srv>, String> {
        let answer = self.query(name, RecordType::SRV).await?;
        let mut srv: Vec<Srv> = answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(Srv {
                    target: s.target().to_utf8().trim_end_matches('.').to_owned(),
                    port: s.port(),
                    priority: s.priority(),
                    weight: s.weight(),
                }),
                _ => None,
            })
            .collect();
        srv.sort();
        Ok(srv)
    }

    /// The IPv4 addresses of `name`, sorted; empty when it does not exist.
    ///
    /// # Errors
    /// As [`Dns::srv`].
    pub async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, String> {
        let answer = self.query(name, RecordType::A).await?;
        let mut ips: Vec<Ipv4Addr> = answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        ips.sort();
        Ok(ips)
    }

    /// Ask for `record` of `name`: over UDP (three attempts), then over TCP
    /// when the answer is truncated.
    ///
    /// # Errors
    /// As [`Dns::srv`].
    pub async fn query(&self, name: &str, record: RecordType) -> Result<Message, String> {
        let name = Name::from_str(&format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
        let mut request = Message::new();
        request
            .set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false)
            .add_query(Query::query(name.clone(), record));
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        request.set_edns(edns);
        let bytes = request
            .to_vec()
            .map_err(|e| format!("encoding the query: {e}"))?;

        let mut last = String::new();
        let mut answer = None;
        for _ in 0..3 {
            match tokio::time::timeout(ATTEMPT, self.udp(&bytes)).await {
                Ok(Ok(a)) => {
                    answer = Some(a);
                    break;
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer over UDP within {ATTEMPT:?}"),
            }
        }
        let mut answer =
            answer.ok_or_else(|| format!("{record} {name} at {}: {last}", self.server))?;
        if answer.truncated() {
            answer = tokio::time::timeout(ATTEMPT, self.tcp(&bytes))
                .await
                .map_err(|_| format!("no answer over TCP within {ATTEMPT:?}"))??;
        }
        if answer.id() != request.id() {
            return Err(format!(
                "answer id {} for query {}",
                answer.id(),
                request.id()
            ));
        }
        match answer.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
            code => Err(format!("{record} {name} at {}: {code}", self.server)),
        }
    }

    async fn udp(&self, bytes: &[u8]) -> Result<Message, String> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        socket
            .send_to(bytes, self.server)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65535];
        let (n, _) = socket
            .recv_from(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Message::from_vec(&buf[..n]).map_err(|e| format!("parsing the answer: {e}"))
    }

    /// DNS over TCP: each message prefixed with its length (RFC 1035 4.2.2).
    async fn tcp(&self, bytes: &[u8]) -> Result<Message, String> {
        let mut conn = tokio::net::TcpStream::connect(self.server)
            .await
            .map_err(|e| e.to_string())?;
        let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
        conn.write_all(&len.to_be_bytes())
            .await
            .map_err(|e| e.to_string())?;
        conn.write_all(bytes).await.map_err(|e| e.to_string())?;
        let len = conn.read_u16().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(len)];
        conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Message::from_vec(&buf).map_err(|e| format!("parsing the answer: {e}"))
    }
}

/// CoreDNS's address: `$ATOLL_TESTENV_DNS`, else `coredns/address` in the
/// state directory of the kubeconfig in use (where `cluster up` writes it).
/// Panics, saying how to start CoreDNS, when neither is there.
pub fn server_address() -> SocketAddr {
    let text = match std::env::var(DNS_ENV) {
        Ok(address) if !address.is_empty() => address,
        _ => {
            let kubeconfig = std::env::split_paths(&crate::kubeconfig_env())
                .next()
                .unwrap_or_default();
            let file = kubeconfig
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("coredns")
                .join("address");
            std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!(
                    "no CoreDNS address: ${DNS_ENV} is unset and {} cannot be read ({e}); \
                     start CoreDNS with `cargo xtask cluster up` (it adds CoreDNS to a running \
                     control plane) and `eval \"$(cargo xtask cluster env)\"`",
                    file.display()
                )
            })
        }
    };
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("CoreDNS address {text:?} is not host:port: {e}"))
}

/// A query id that differs between queries, so a late answer to an
/// earlier query is not taken for this one's.
fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid = std::process::id() as u16;
    pid.wrapping_mul(31)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}
