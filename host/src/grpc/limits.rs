//! Bounds on what callers can make the gRPC server hold: connections,
//! streams per connection, and requests per caller per second.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::sync::MutexExt;

/// The bounds, each set by an `atoll run` flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpcLimits {
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent streams (calls, JoinGroup streams included) per HTTP/2
    /// connection, as the server's SETTINGS tell the client.
    pub max_streams_per_connection: u32,
    /// Sustained calls per second per caller (a verified user, or the peer
    /// address of a caller without verified credentials); `0` turns the
    /// limit off.
    pub requests_per_second: u32,
    /// Calls a caller may make at once above the sustained rate.
    pub burst: u32,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_connections: 1024,
            max_streams_per_connection: 256,
            requests_per_second: 100,
            burst: 500,
        }
    }
}

/// Accepted connections of `listener`, at most `max` open at once: each
/// holds a permit until it closes, and the next accept waits for one.
pub fn limited(listener: TcpListener, max: usize) -> impl Stream<Item = std::io::Result<Limited>> {
    let permits = Arc::new(Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, permits), |(listener, permits)| async move {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return None; // never closed
        };
        let accepted = listener.accept().await.map(|(io, _)| Limited {
            io,
            _permit: permit,
        });
        Some((accepted, (listener, permits)))
    })
}

/// A connection holding one of [`limited`]'s permits.
pub struct Limited {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Limited {
    // The TCP connection's, so `Request::remote_addr` keeps working.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Callers whose buckets are remembered at most; a full bucket is the same
/// as none, so those go first when there are more.
const BUCKETS: usize = 10_000;

/// A token bucket per caller.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: std::sync::Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(limits: &GrpcLimits) -> Self {
        RateLimiter {
            rate: f64::from(limits.requests_per_second),
            burst: f64::from(limits.burst.max(1)),
            buckets: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Take one call from `caller`'s bucket at `now`; `false` when it is
    /// empty (the caller is over its rate).
    pub fn admit(&self, caller: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let (rate, burst) = (self.rate, self.burst);
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst)
        };
        let mut buckets = self.buckets.locked();
        if buckets.len() >= BUCKETS && !buckets.contains_key(caller) {
            buckets.retain(|_, bucket| refill(*bucket) < burst);
            if buckets.len() >= BUCKETS {
                // Every remembered caller is busy: forget one arbitrarily
                // rather than grow (it gets a fresh burst).
                if let Some(key) = buckets.keys().next().cloned() {
                    buckets.remove(&key);
                }
            }
        }
        let tokens = buckets.get(caller).map_or(burst, |bucket| refill(*bucket));
        let admitted = tokens >= 1.0;
        let left = if admitted { tokens - 1.0 } else { tokens };
        buckets.insert(caller.to_string(), (left, now));
        admitted
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(&GrpcLimits {
            requests_per_second: rate,
            burst,
            ..GrpcLimits::default()
        })
    }

    #[test]
    fn a_caller_gets_its_burst_then_its_rate() {
        let limiter = limiter(10, 5);
        let t0 = Instant::now();
        let admitted = (0..8).filter(|_| limiter.admit("alice", t0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert!(!limiter.admit("alice", t0));
        assert!(limiter.admit("bob", t0), "buckets are per caller");
        // 10 per second: one more every 100 ms.
        assert!(limiter.admit("alice", t0 + Duration::from_millis(100)));
        assert!(!limiter.admit("alice", t0 + Duration::from_millis(150)));
        assert_eq!(
            (0..20)
                .filter(|_| limiter.admit("alice", t0 + Duration::from_secs(60)))
                .count(),
            5,
            "refills to the burst, not beyond"
        );
    }

    #[test]
    fn zero_turns_the_limit_off_and_buckets_stay_bounded() {
        let off = limiter(0, 1);
        assert!((0..1000).all(|_| off.admit("alice", Instant::now())));
        let limiter = limiter(1, 1);
        let t0 = Instant::now();
        for i in 0..(BUCKETS + 10) {
            limiter.admit(&format!("caller-{i}"), t0);
        }
        assert!(limiter.buckets.locked().len() <= BUCKETS);
    }
}
