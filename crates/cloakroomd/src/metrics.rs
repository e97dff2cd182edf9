//! What the daemon counts, and the Prometheus text endpoint that shows it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cloakroom_proto::{Status, Verb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{Error, ErrorKind};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The daemon's counters. Shared by every task; read them in tests, or as Prometheus text
/// ([`Metrics::render`], served on `--metrics`).
#[derive(Debug)]
pub struct Metrics {
    requests: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    bad_frames: AtomicU64,
    store_errors: AtomicU64,
    connected: AtomicI64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    feed_published: AtomicU64,
    replies_refused: AtomicU64,
    in_flight: AtomicI64,
}

fn verb_index(verb: Option<Verb>) -> usize {
    match verb {
        Some(v) => Verb::ALL.iter().position(|x| *x == v).map_or(0, |i| i + 1),
        None => 0,
    }
}

fn status_index(status: Status) -> usize {
    Status::ALL.iter().position(|x| *x == status).unwrap_or(0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        let n = (Verb::ALL.len() + 1) * Status::ALL.len();
        Self {
            requests: (0..n).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            latency_sum_micros: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            connected: AtomicI64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            feed_published: AtomicU64::new(0),
            replies_refused: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }

    pub(crate) fn request(&self, verb: Option<Verb>, status: Status, took: Duration) {
        let i = verb_index(verb) * Status::ALL.len() + status_index(status);
        if let Some(c) = self.requests.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bad_frame(&self) {
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn client_connected(&self, delta: i64) {
        self.connected.fetch_add(delta, Ordering::Relaxed);
    }
    pub(crate) fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn published(&self) {
        self.feed_published.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reply_refused(&self) {
        self.replies_refused.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests answered with `verb` (`None`: an unknown verb) and `status`.
    pub fn requests(&self, verb: Option<Verb>, status: Status) -> u64 {
        let i = verb_index(verb) * Status::ALL.len() + status_index(status);
        self.requests
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    /// Requests answered, all verbs and statuses.
    pub fn requests_total(&self) -> u64 {
        self.latency_count.load(Ordering::Relaxed)
    }
    /// Messages dropped unanswered (fewer than 3 readable frames).
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }
    /// Store calls that failed (unavailable or corrupt).
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }
    /// Clients connected now.
    pub fn connected_clients(&self) -> i64 {
        self.connected.load(Ordering::Relaxed)
    }
    /// Session loads answered from the cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }
    /// Session loads that went to the store.
    pub fn cache_misses(&self) -> u64 {
        self.cache_misses.load(Ordering::Relaxed)
    }
    /// Revocations published on the feed.
    pub fn feed_published(&self) -> u64 {
        self.feed_published.load(Ordering::Relaxed)
    }
    /// Requests being handled now.
    pub fn requests_in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP cloakroomd_requests_total Requests answered, by verb and status.\n");
        out.push_str("# TYPE cloakroomd_requests_total counter\n");
        for (vi, verb) in std::iter::once("UNKNOWN")
            .chain(Verb::ALL.iter().map(|v| v.as_str()))
            .enumerate()
        {
            for (si, status) in Status::ALL.iter().enumerate() {
                let n = self.requests[vi * Status::ALL.len() + si].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "cloakroomd_requests_total{{verb=\"{verb}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP cloakroomd_request_seconds Time from receiving a request to queueing its reply.\n");
        out.push_str("# TYPE cloakroomd_request_seconds histogram\n");
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "cloakroomd_request_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "cloakroomd_request_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "cloakroomd_request_seconds_sum {sum}");
        let _ = writeln!(out, "cloakroomd_request_seconds_count {cumulative}");
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "cloakroomd_bad_frames_total",
            "counter",
            "Messages dropped unanswered: fewer than 3 readable frames.",
            self.bad_frames().to_string(),
        );
        one(
            "cloakroomd_store_errors_total",
            "counter",
            "Store calls that failed (unavailable or corrupt).",
            self.store_errors().to_string(),
        );
        one(
            "cloakroomd_connected_clients",
            "gauge",
            "Client connections open now.",
            self.connected_clients().to_string(),
        );
        one(
            "cloakroomd_cache_hits_total",
            "counter",
            "Session loads answered from the cache.",
            self.cache_hits().to_string(),
        );
        one(
            "cloakroomd_cache_misses_total",
            "counter",
            "Session loads that went to the store.",
            self.cache_misses().to_string(),
        );
        one(
            "cloakroomd_feed_published_total",
            "counter",
            "Revocations published on the feed.",
            self.feed_published().to_string(),
        );
        one(
            "cloakroomd_replies_refused_total",
            "counter",
            "Replies not queued (reply queue full).",
            self.replies_refused.load(Ordering::Relaxed).to_string(),
        );
        one(
            "cloakroomd_requests_in_flight",
            "gauge",
            "Requests being handled now.",
            self.requests_in_flight().to_string(),
        );
        out
    }
}

/// Binds the metrics listener (loopback, checked by the config).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::new(
            ErrorKind::Socket,
            format!("cannot listen for metrics on {addr}"),
        )
        .with_source(e)
    })
}

/// Serves `GET /metrics` (any path, in fact) until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut used = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while used < buf.len() {
                    let n = conn.read(&mut buf[used..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    used += n;
                    if buf[..used].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            let response = match read {
                Ok(Some(())) if buf.starts_with(b"GET ") => {
                    let body = metrics.render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                Ok(Some(())) => {
                    "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                }
                _ => return,
            };
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
