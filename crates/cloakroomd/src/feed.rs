//! The revocation feed: a PUB socket that numbers every revocation (docs/protocol.md).

use std::time::Duration;

use cloakroom_proto::{FeedEvent, FeedMessage};
use cloakroom_zmq::{zmq, Socket, SocketBuilder, SocketKind};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use std::sync::Arc;

/// How often a heartbeat is sent.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// Hands revocations to the publishing task, which numbers them in the order it takes them.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    tx: mpsc::Sender<FeedEvent>,
}

impl Feed {
    /// Publishes `event`; waits while the publisher is behind (never drops one silently).
    pub(crate) async fn publish(&self, event: FeedEvent) {
        if self.tx.send(event).await.is_err() {
            tracing::warn!("revocation feed is stopped; a revocation was not published");
        }
    }
}

/// Starts the publisher on a bound PUB socket. The task ends when every [`Feed`] is dropped.
pub(crate) fn spawn(
    mut socket: Socket,
    metrics: Arc<Metrics>,
) -> (Feed, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<FeedEvent>(4096);
    let mut stream = [0u8; 8];
    if getrandom::getrandom(&mut stream).is_err() {
        // The stream id only has to differ between runs; the clock will do.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        stream = t.to_be_bytes();
    }
    let task = tokio::spawn(async move {
        let mut seq: u64 = 0;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        seq += 1;
                        metrics.published();
                        FeedMessage::new(stream, seq, event)
                    }
                    None => return,
                },
                _ = heartbeat.tick() => FeedMessage::new(stream, seq, FeedEvent::Heartbeat),
            };
            let frames = message
                .encode()
                .into_iter()
                .map(zmq::Message::from)
                .collect();
            if let Err(e) = socket.send(frames).await {
                tracing::warn!(error = %e, seq, "revocation feed: send failed");
            }
        }
    });
    (Feed { tx }, task)
}

/// A PUB socket for the feed.
pub(crate) fn socket(ctx: &zmq::Context) -> Result<Socket, cloakroom_zmq::Error> {
    SocketBuilder::new(SocketKind::Pub).linger(0).build(ctx)
}
