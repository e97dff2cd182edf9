//! Replies queued by workers: held per peer while libzmq cannot take them, retried round
//! robin, bounded (rule 4 of the module docs).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use tokio::time::Instant;

#[cfg(feature = "broken-variants")]
use super::Broken;
use super::{Counters, Multipart, Socket, ROOM_BACKOFF_MAX, ROOM_BACKOFF_MIN};
use crate::error::{ErrorKind, Result};

/// Replies libzmq could not take yet (`EAGAIN`), one queue per peer (per routing id for a
/// ROUTER; one queue for the other socket types, whose `EAGAIN` is not about one peer).
#[derive(Default)]
pub(super) struct Held {
    pub(super) by_peer: HashMap<Vec<u8>, VecDeque<Multipart>>,
    /// Peers with held replies, in the order they are retried (round robin).
    pub(super) order: VecDeque<Vec<u8>>,
    pub(super) len: usize,
}

impl Socket {
    /// The queue a message is held in: its routing id on a ROUTER, one queue otherwise.
    pub(super) fn peer_key(&self, msg: &Multipart) -> Vec<u8> {
        #[cfg(feature = "broken-variants")]
        if self.broken == Broken::OldReplyQueue {
            return Vec::new();
        }
        match msg.first() {
            Some(id) if self.is_router => id.to_vec(),
            _ => Vec::new(),
        }
    }

    pub(super) fn set_held_gauge(&self) {
        let held = self.held.len as u64;
        self.counters
            .inner
            .held_replies
            .store(held, Ordering::Relaxed);
    }

    /// Holds `msg` at the back of its peer's queue without trying to send it, or drops and
    /// counts it when that queue or all of them are at their bound.
    pub(super) fn hold(&mut self, msg: Multipart) {
        if self.check_size(&msg).is_err() {
            Counters::bump(&self.counters.inner.dropped_replies);
            return;
        }
        let key = self.peer_key(&msg);
        let queue_len = self.held.by_peer.get(&key).map_or(0, VecDeque::len);
        let bounded = {
            #[cfg(feature = "broken-variants")]
            {
                self.broken != Broken::OldReplyQueue
            }
            #[cfg(not(feature = "broken-variants"))]
            {
                true
            }
        };
        if bounded && (queue_len >= self.held_per_peer || self.held.len >= self.held_total) {
            Counters::bump(&self.counters.inner.shed_replies);
            return;
        }
        if queue_len == 0 {
            self.held.order.push_back(key.clone());
        }
        self.held.by_peer.entry(key).or_default().push_back(msg);
        self.held.len += 1;
        self.set_held_gauge();
    }

    /// Takes one reply from the queue: sends it at once, unless its peer already has
    /// replies held (then it goes behind them, keeping that peer's order) or libzmq cannot
    /// take it (then it is held).
    pub(super) fn send_or_hold(&mut self, msg: Multipart) -> Result<()> {
        if self.check_size(&msg).is_err() {
            Counters::bump(&self.counters.inner.dropped_replies);
            return Ok(());
        }
        if self.held.len > 0 && self.held.by_peer.contains_key(&self.peer_key(&msg)) {
            self.hold(msg);
            return Ok(());
        }
        match self.try_send(msg) {
            Ok(None) => {
                Counters::bump(&self.counters.inner.sent);
                Ok(())
            }
            Ok(Some(back)) => {
                self.hold(back);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Closed => Err(e),
            Err(_) => {
                Counters::bump(&self.counters.inner.dropped_replies);
                Ok(())
            }
        }
    }

    /// Retries the held replies (each peer in turn, round robin), then moves replies from
    /// the queue into libzmq, trying at most `limit` messages in all. Returns how many it
    /// tried: the caller charges them to the drain budget.
    pub(super) fn flush_queued(&mut self, limit: u32) -> Result<u32> {
        #[cfg(feature = "broken-variants")]
        if self.broken == Broken::OldReplyQueue {
            self.flush_old()?;
            return Ok(0);
        }
        let mut used = 0u32;
        // Held queues are retried only when room may have appeared, and take at most half
        // the batch while new replies wait: many stuck peers cannot crowd out the others.
        let retry_limit = if self.outbox_rx.is_empty() {
            limit
        } else {
            (limit / 2).max(1)
        };
        // A non-ROUTER socket woke for POLLOUT has room: always due (one queue, one try).
        let now = Instant::now();
        let due = self.retry_due || !self.is_router || now >= self.next_retry;
        let peers = if due { self.held.order.len() } else { 0 };
        let mut any_blocked = false;
        let mut visited = 0;
        let mut cut_short = false;
        for _ in 0..peers {
            if used >= retry_limit {
                break;
            }
            visited += 1;
            let Some(peer) = self.held.order.pop_front() else {
                break;
            };
            let Some(mut queue) = self.held.by_peer.remove(&peer) else {
                continue;
            };
            let before = queue.len();
            let (mut gone, mut blocked) = (false, false);
            while used < retry_limit {
                let Some(msg) = queue.pop_front() else { break };
                used += 1;
                match self.try_send(msg) {
                    Ok(None) => {
                        Counters::bump(&self.counters.inner.sent);
                        self.room_backoff = ROOM_BACKOFF_MIN;
                    }
                    Ok(Some(back)) => {
                        queue.push_front(back);
                        blocked = true;
                        any_blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Closed => {
                        self.held.len -= before - queue.len();
                        self.set_held_gauge();
                        return Err(e);
                    }
                    Err(_) => {
                        // The peer is gone (unroutable): so are the rest of its replies.
                        Counters::bump(&self.counters.inner.dropped_replies);
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                for _ in 0..queue.len() {
                    Counters::bump(&self.counters.inner.dropped_replies);
                }
                queue.clear();
            }
            self.held.len -= before - queue.len();
            cut_short |= !queue.is_empty() && !blocked;
            if !queue.is_empty() {
                self.held.by_peer.insert(peer.clone(), queue);
                self.held.order.push_back(peer);
            }
        }
        self.retry_due = cut_short || visited < peers;
        if any_blocked {
            // Next retry after a backoff (1 ms doubling to 64 ms, reset by a success).
            self.next_retry = now + self.room_backoff;
            self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
        }
        self.set_held_gauge();
        while used < limit {
            let Ok(msg) = self.outbox_rx.try_recv() else {
                break;
            };
            used += 1;
            self.send_or_hold(msg)?;
        }
        Ok(used)
    }

    /// Broken variant only: the reply queue of before (see [`Broken::OldReplyQueue`]).
    #[cfg(feature = "broken-variants")]
    pub(super) fn flush_old(&mut self) -> Result<()> {
        loop {
            let msg = match self
                .held
                .by_peer
                .get_mut(&Vec::new())
                .and_then(VecDeque::pop_front)
            {
                Some(m) => {
                    self.held.len -= 1;
                    m
                }
                None => match self.outbox_rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            match self.try_send(msg) {
                Ok(None) => {
                    Counters::bump(&self.counters.inner.sent);
                    self.room_backoff = ROOM_BACKOFF_MIN;
                }
                Ok(Some(back)) => {
                    let queue = self.held.by_peer.entry(Vec::new()).or_default();
                    queue.push_front(back);
                    self.held.len += 1;
                    self.next_retry = Instant::now() + self.room_backoff;
                    self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Closed => return Err(e),
                Err(_) => Counters::bump(&self.counters.inner.dropped_replies),
            }
        }
        if self.held.len == 0 {
            self.held.by_peer.clear();
            self.held.order.clear();
        }
        self.set_held_gauge();
        Ok(())
    }
}
