//! `linkproxy`: a TCP proxy that behaves like one host's network link, so that "the link"
//! exists on a single machine: benchmarks of S3 reads against a local `moto_server` measure
//! how close a worker gets to a link rate, and tests cut a response mid-body.
//!
//! - **Rate**: every byte sent back to clients (upstream → client, the download direction)
//!   passes one token bucket shared by all connections, as a host's NIC is shared by its
//!   streams. [`Stats::link_busy`] is then `bytes ÷ rate`: the time the link spent sending.
//! - **Latency**: each request (client → upstream bytes after a quiet gap) is held for the
//!   configured latency before it is forwarded, as a round trip to S3 would delay it.
//! - **Connections**: at most `max_connections` are forwarded at once; more wait, accepted.
//! - **Cuts**: [`LinkProxy::cut_next`] closes the next connection(s) whose download passes a
//!   byte count — a GET that dies mid-body.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // An upstream that sends 64 KiB to whoever connects.
//! let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let up_addr = up.local_addr()?;
//! tokio::spawn(async move {
//!     let (mut s, _) = up.accept().await.unwrap();
//!     s.write_all(&vec![7u8; 64 << 10]).await.unwrap();
//! });
//! let link = linkproxy::LinkConfig { rate: Some(1 << 20), ..Default::default() }; // 1 MiB/s
//! let proxy = linkproxy::LinkProxy::start(up_addr, link).await?;
//! let mut c = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! let mut got = Vec::new();
//! c.read_to_end(&mut got).await?;
//! assert_eq!(got.len(), 64 << 10);
//! assert_eq!(proxy.stats().bytes_down, 64 << 10);
//! // 64 KiB at 1 MiB/s: the link was busy 62.5 ms.
//! assert_eq!(proxy.stats().link_busy(), Duration::from_micros(62_500));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// Bytes sent per step of the token bucket: small enough that streams interleave fairly.
const STEP: usize = 16 << 10;

/// Credit the link keeps while idle: a stream that wakes up late (the timer's 1 ms grain) sends
/// into time the link would otherwise lose, so the link reaches its rate with many small steps.
const BURST: Duration = Duration::from_millis(5);

/// A gap in client → upstream traffic after which the next bytes count as a new request.
const REQUEST_GAP: Duration = Duration::from_millis(1);

/// How the link behaves. `Default`: no rate limit, no latency, no connection limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkConfig {
    /// Download rate of the whole link, bytes per second (`None`: unlimited).
    pub rate: Option<u64>,
    /// Added to every request before it reaches the upstream.
    pub latency: Duration,
    /// Connections forwarded at once (`None`: no limit); more wait for a free one.
    pub max_connections: Option<usize>,
}

impl LinkConfig {
    /// A link of `mbps` megabits per second (10⁶ bit/s), as instance types are rated.
    pub fn mbps(mbps: f64) -> LinkConfig {
        LinkConfig {
            rate: Some((mbps * 1e6 / 8.0).round().max(1.0) as u64),
            ..LinkConfig::default()
        }
    }
}

/// What went through the link so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes sent to clients (the download direction).
    pub bytes_down: u64,
    /// Bytes sent to the upstream (requests).
    pub bytes_up: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Requests seen (client → upstream bursts).
    pub requests: u64,
    /// Connections closed by a cut ([`LinkProxy::cut_next`]).
    pub cuts: u64,
    /// The configured rate (bytes/s), if any.
    pub rate: Option<u64>,
}

impl Stats {
    /// Time the link spent sending (`bytes_down ÷ rate`); zero without a rate.
    pub fn link_busy(&self) -> Duration {
        match self.rate {
            Some(r) => {
                Duration::from_nanos((self.bytes_down as u128 * 1_000_000_000 / r as u128) as u64)
            }
            None => Duration::ZERO,
        }
    }

    /// The difference `self - earlier` (counters only).
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            bytes_down: self.bytes_down - earlier.bytes_down,
            bytes_up: self.bytes_up - earlier.bytes_up,
            connections: self.connections - earlier.connections,
            requests: self.requests - earlier.requests,
            cuts: self.cuts - earlier.cuts,
            rate: self.rate,
        }
    }
}

#[derive(Default)]
struct Counters {
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    connections: AtomicU64,
    requests: AtomicU64,
    cuts: AtomicU64,
    /// Pending cuts: (count, after how many downloaded bytes of a connection).
    cut_after: AtomicU64,
    cut_count: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    cfg: LinkConfig,
    /// When the link is next free to send (the token bucket).
    next_free: Mutex<Instant>,
    slots: Option<Arc<Semaphore>>,
    n: Counters,
}

/// A running proxy; stops when dropped.
pub struct LinkProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on `127.0.0.1` (an ephemeral port) and forwards to `upstream`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(upstream: SocketAddr, cfg: LinkConfig) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            cfg,
            next_free: Mutex::new(Instant::now()),
            slots: cfg
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            n: Counters::default(),
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    if let Err(e) = serve(&s, client).await {
                        tracing::debug!(error = %e, "linkproxy connection ended");
                    }
                });
            }
        });
        Ok(LinkProxy { addr, shared, task })
    }

    /// The address to connect to (`http://{addr}` for an S3 endpoint).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let n = &self.shared.n;
        Stats {
            bytes_down: n.bytes_down.load(Ordering::Relaxed),
            bytes_up: n.bytes_up.load(Ordering::Relaxed),
            connections: n.connections.load(Ordering::Relaxed),
            requests: n.requests.load(Ordering::Relaxed),
            cuts: n.cuts.load(Ordering::Relaxed),
            rate: self.shared.cfg.rate,
        }
    }

    /// Closes the next `count` connections whose download passes `after_bytes` bytes, right
    /// there (the client sees its response end mid-body).
    pub fn cut_next(&self, count: u64, after_bytes: u64) {
        self.shared.n.cut_after.store(after_bytes, Ordering::SeqCst);
        self.shared.n.cut_count.store(count, Ordering::SeqCst);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(s: &Arc<Shared>, client: TcpStream) -> std::io::Result<()> {
    s.n.connections.fetch_add(1, Ordering::Relaxed);
    let _slot = match &s.slots {
        Some(sem) => Some(Arc::clone(sem).acquire_owned().await.expect("never closed")),
        None => None,
    };
    let upstream = TcpStream::connect(s.upstream).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; STEP];
        let mut last = Instant::now() - REQUEST_GAP * 2;
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                uw.shutdown().await.ok();
                return Ok::<_, std::io::Error>(());
            }
            if last.elapsed() >= REQUEST_GAP {
                s.n.requests.fetch_add(1, Ordering::Relaxed);
                if !s.cfg.latency.is_zero() {
                    tokio::time::sleep(s.cfg.latency).await;
                }
            }
            uw.write_all(&buf[..n]).await?;
            last = Instant::now();
            s.n.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    let down = async {
        let mut buf = vec![0u8; STEP];
        let mut sent = 0u64;
        loop {
            let n = ur.read(&mut buf).await?;
            if n == 0 {
                cw.shutdown().await.ok();
                return Ok::<_, std::io::Error>(());
            }
            let mut n = n;
            let cut = pending_cut(s, sent, n as u64);
            if let Some(keep) = cut {
                n = keep as usize;
            }
            if let Some(rate) = s.cfg.rate {
                let ready = {
                    let mut next = s.next_free.lock().await;
                    let now = Instant::now();
                    let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
                    *next = start
                        + Duration::from_nanos((n as u128 * 1_000_000_000 / rate as u128) as u64);
                    *next
                };
                tokio::time::sleep_until(ready).await;
            }
            cw.write_all(&buf[..n]).await?;
            sent += n as u64;
            s.n.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
            if cut.is_some() {
                s.n.cuts.fetch_add(1, Ordering::Relaxed);
                // The connection closes here: the client's response ends before its
                // Content-Length, which an HTTP client reports as a broken body.
                return Err(std::io::Error::other("cut"));
            }
        }
    };
    // The download side decides when the connection ends (a cut drops both halves).
    tokio::select! {
        r = down => r,
        r = async { up.await?; std::future::pending::<std::io::Result<()>>().await } => r,
    }
}

/// When a cut is pending and this step passes its byte count, how many of the step's `n`
/// bytes still go out before the connection is closed.
fn pending_cut(s: &Shared, sent: u64, n: u64) -> Option<u64> {
    let after = s.n.cut_after.load(Ordering::SeqCst);
    if sent + n <= after {
        return None;
    }
    // Claim one pending cut.
    let mut left = s.n.cut_count.load(Ordering::SeqCst);
    loop {
        if left == 0 {
            return None;
        }
        match s
            .n
            .cut_count
            .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return Some(after.saturating_sub(sent).min(n)),
            Err(now) => left = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upstream_sending(bytes: usize) -> SocketAddr {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = up.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut req = [0u8; 16];
                    let _ = s.read(&mut req).await;
                    let _ = s.write_all(&vec![1u8; bytes]).await;
                });
            }
        });
        addr
    }

    async fn fetch(addr: SocketAddr) -> std::io::Result<usize> {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(b"GET").await?;
        let mut got = Vec::new();
        c.read_to_end(&mut got).await?;
        Ok(got.len())
    }

    #[tokio::test]
    async fn streams_share_the_rate() {
        let up = upstream_sending(256 << 10).await;
        let p = LinkProxy::start(
            up,
            LinkConfig {
                rate: Some(4 << 20),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let t = std::time::Instant::now();
        let (a, b) = tokio::join!(fetch(p.addr()), fetch(p.addr()));
        assert_eq!((a.unwrap(), b.unwrap()), (256 << 10, 256 << 10));
        // 512 KiB at 4 MiB/s: at least 125 ms however the streams interleave.
        assert!(
            t.elapsed() >= Duration::from_millis(120),
            "{:?}",
            t.elapsed()
        );
        let st = p.stats();
        assert_eq!(
            (st.bytes_down, st.connections, st.requests),
            (512 << 10, 2, 2)
        );
        assert_eq!(st.link_busy(), Duration::from_millis(125));
    }

    #[tokio::test]
    async fn a_cut_ends_one_response_mid_body() {
        let up = upstream_sending(200_000).await;
        let p = LinkProxy::start(up, LinkConfig::default()).await.unwrap();
        p.cut_next(1, 50_000);
        let first = fetch(p.addr()).await;
        // The client saw 50,000 bytes, then the connection ended.
        assert_eq!(first.unwrap(), 50_000);
        assert_eq!(fetch(p.addr()).await.unwrap(), 200_000);
        assert_eq!(p.stats().cuts, 1);
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait() {
        let up = upstream_sending(64 << 10).await;
        let cfg = LinkConfig {
            rate: Some(1 << 20),
            max_connections: Some(1),
            latency: Duration::from_millis(20),
        };
        let p = LinkProxy::start(up, cfg).await.unwrap();
        let (a, b) = tokio::join!(fetch(p.addr()), fetch(p.addr()));
        assert_eq!((a.unwrap(), b.unwrap()), (64 << 10, 64 << 10));
        assert_eq!(p.stats().requests, 2);
    }

    #[test]
    fn mbps_is_megabits() {
        assert_eq!(LinkConfig::mbps(2500.0).rate, Some(312_500_000));
    }
}
