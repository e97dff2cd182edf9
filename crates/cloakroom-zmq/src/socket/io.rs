//! The non-blocking receive and send, and the one place that sleeps on `ZMQ_FD` (rules 1
//! to 3 and 5 of the module docs).

use std::future::{poll_fn, Future};
use std::task::Poll;

use tokio::time::Instant;

#[cfg(feature = "broken-variants")]
use super::Broken;
use super::{Counters, Multipart, Socket, ROOM_BACKOFF_MAX, ROOM_BACKOFF_MIN};
use crate::error::{Error, ErrorKind, Result};

/// What woke a sleeping socket.
pub(super) enum Wake {
    /// `ZMQ_EVENTS` shows what we want.
    Ready,
    /// A queued reply was taken from the reply queue.
    Reply(Multipart),
}

impl Socket {
    /// One non-blocking receive of a whole message; `None` on `EAGAIN`.
    pub(super) fn try_recv(&mut self) -> Result<Option<Multipart>> {
        let mut first = zmq::Message::new();
        match self.sock.recv(&mut first, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(e) => return Err(Error::zmq("recv", e)),
        }
        let mut parts = Vec::with_capacity(4);
        parts.push(first);
        // libzmq delivers a message whole: once its first frame is here, so are the rest.
        while self
            .sock
            .get_rcvmore()
            .map_err(|e| Error::zmq("ZMQ_RCVMORE", e))?
        {
            let mut part = zmq::Message::new();
            // Never blocks: the rest of a message is there; DONTWAIT makes that a checked
            // fact, not an assumption that could stall the runtime.
            self.sock
                .recv(&mut part, zmq::DONTWAIT)
                .map_err(|e| Error::zmq("recv", e))?;
            parts.push(part);
        }
        Counters::bump(&self.counters.inner.received);
        Ok(Some(parts))
    }

    /// One non-blocking send of a whole message; gives it back on `EAGAIN`.
    pub(super) fn try_send(&mut self, msg: Multipart) -> Result<Option<Multipart>> {
        let n = msg.len();
        if n == 0 {
            return Err(Error::new(ErrorKind::Invalid, "send of an empty multipart"));
        }
        let more = |i: usize| if i + 1 < n { zmq::SNDMORE } else { 0 };
        // The first frame goes as a copy, so that on EAGAIN the message is still ours
        // (zmq 0.10 drops a moved Message whose send fails). Once libzmq has taken the
        // first frame it takes the rest (a message is atomic), so those move, zero-copy.
        match self.sock.send(&msg[0][..], zmq::DONTWAIT | more(0)) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(Some(msg)),
            Err(e) => return Err(Error::zmq("send", e)),
        }
        for (i, frame) in msg.into_iter().enumerate().skip(1) {
            self.sock
                .send(frame, zmq::DONTWAIT | more(i))
                .map_err(|e| Error::zmq("send", e))?;
        }
        Ok(None)
    }

    pub(super) fn events(&self) -> Result<zmq::PollEvents> {
        self.sock
            .get_events()
            .map_err(|e| Error::zmq("ZMQ_EVENTS", e))
    }

    /// Sleeps until `ZMQ_EVENTS` shows `want`, or a queued reply arrives. The only place
    /// that waits on the descriptor (apart from the broken variants).
    ///
    /// `after_recv_eagain`: the caller's last call on the socket was a non-blocking receive
    /// that returned `EAGAIN`. libzmq handles all its pending commands before it answers
    /// that (`process_commands` with a zero timeout, unthrottled), so the answer is as good
    /// as a fresh `ZMQ_EVENTS` check and the first check is skipped (it costs a `poll(2)`).
    /// For the same reason a descriptor wakeup returns at once (readiness cleared) and the
    /// caller's next DONTWAIT receive is the re-check. A send's `EAGAIN` is not as good:
    /// libzmq throttles command handling on the send path, so send waits re-check here.
    pub(super) async fn sleep(
        &mut self,
        want: zmq::PollEvents,
        after_recv_eagain: bool,
    ) -> Result<Wake> {
        let mut recheck = !after_recv_eagain;
        // Waiting for room at one ROUTER peer: no event says when, so the timer doubles as
        // a retry backoff (1 ms doubling to 64 ms) beside the descriptor.
        let room_wait = want.is_empty() || (self.is_router && self.held.len > 0);
        if want.is_empty() {
            let at = Instant::now() + self.room_backoff;
            self.safety.as_mut().reset(at);
            self.room_backoff = (self.room_backoff * 2).min(ROOM_BACKOFF_MAX);
        } else if room_wait {
            // Replies held for ROUTER peers: wake when their retry is due (set by the last
            // retry that found a peer still full), whatever cancelled earlier waits.
            let at = self.next_retry.max(Instant::now() + ROOM_BACKOFF_MIN);
            self.safety.as_mut().reset(at);
        }
        loop {
            // Rule: re-check ZMQ_EVENTS before every sleep (after EAGAIN, after a wakeup,
            // after any send). This also makes libzmq handle its pending commands.
            if recheck && self.events()?.intersects(want) {
                return Ok(Wake::Ready);
            }
            recheck = true;
            enum Woke {
                Fd,
                Reply(Multipart),
                Timer,
            }
            let mut waited = false;
            let woke = poll_fn(|cx| {
                match self.fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        // Rule: clear tokio's readiness right after the wait returns and
                        // before re-checking ZMQ_EVENTS. An edge that comes after this
                        // point sets it again, so it cannot be lost.
                        #[cfg(feature = "broken-variants")]
                        if self.broken == Broken::NoClear {
                            guard.retain_ready();
                            return Poll::Ready(Ok(Woke::Fd));
                        }
                        guard.clear_ready();
                        return Poll::Ready(Ok(Woke::Fd));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
                if let Poll::Ready(Some(m)) = self.outbox_rx.poll_recv(cx) {
                    return Poll::Ready(Ok(Woke::Reply(m)));
                }
                if self.safety.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Woke::Timer));
                }
                waited = true;
                Poll::Pending
            })
            .await
            .map_err(|e| Error::io("wait on ZMQ_FD", e))?;
            if waited {
                // The task really waited: the runtime has run the others. A fresh budget.
                self.budget = self.budget_max;
            }
            match woke {
                Woke::Fd => {
                    Counters::bump(&self.counters.inner.fd_wakeups);
                    self.retry_due = true;
                    // From `recv`, whose next step is a DONTWAIT receive: that receive is the
                    // re-check (libzmq handles its commands first), and a cheaper one than
                    // ZMQ_EVENTS followed by the receive. Waiting to send on a ROUTER, or
                    // with replies held for a peer: any wakeup may mean room. Either way
                    // the caller tries, then comes back here.
                    if after_recv_eagain || want.is_empty() || self.held.len > 0 {
                        return Ok(Wake::Ready);
                    }
                }
                Woke::Reply(m) => {
                    if want.contains(zmq::POLLIN) {
                        // Send it now (and whatever else is queued, within the budget), then
                        // re-check.
                        self.spend_on_replies(1);
                        self.send_or_hold(m)?;
                        let used = self.flush_queued(self.budget)?;
                        self.spend_on_replies(used);
                        if self.held.len > 0 || self.budget == 0 {
                            // libzmq took not all of it, or the budget is spent: back to the
                            // caller's loop, which waits for room the right way for this
                            // socket type, or yields to the runtime.
                            return Ok(Wake::Ready);
                        }
                        #[cfg(feature = "broken-variants")]
                        if self.broken == Broken::NoRecheckAfterSend {
                            let _pollout = self.events()?.contains(zmq::POLLOUT);
                            recheck = false;
                        }
                    } else {
                        // A `send` is waiting for POLLOUT: queued replies go after it.
                        return Ok(Wake::Reply(m));
                    }
                }
                Woke::Timer if room_wait => {
                    self.retry_due = true;
                    let at = Instant::now() + self.safety_interval;
                    self.safety.as_mut().reset(at);
                    return Ok(Wake::Ready);
                }
                Woke::Timer => {
                    self.check_missed(want)?;
                    self.safety
                        .as_mut()
                        .reset(Instant::now() + self.safety_interval);
                    if want.is_empty() || self.held.len > 0 {
                        return Ok(Wake::Ready);
                    }
                }
            }
        }
    }

    /// The safety timer fired while asleep: if the descriptor is not readable but libzmq
    /// has what we wait for, the edge was lost. Count it; the caller's re-check recovers.
    pub(super) fn check_missed(&self, want: zmq::PollEvents) -> Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.get_ref().0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised pollfd on our stack, the count is 1, and
        // a zero timeout makes the call return at once. The descriptor is open (see build).
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc < 0 {
            return Err(Error::io("poll ZMQ_FD", std::io::Error::last_os_error()));
        }
        let fd_readable = rc > 0 && (pfd.revents & libc::POLLIN) != 0;
        if !fd_readable && self.events()?.intersects(want) {
            Counters::bump(&self.counters.inner.missed_wakeups);
        }
        Ok(())
    }

    /// Broken variant only: wait for a descriptor edge, with no `ZMQ_EVENTS` re-check first.
    #[cfg(feature = "broken-variants")]
    pub(super) async fn wait_fd_only(&mut self) -> Result<()> {
        loop {
            let timer = poll_fn(|cx| {
                if let Poll::Ready(r) = self.fd.poll_read_ready(cx) {
                    let mut guard = r?;
                    guard.clear_ready();
                    return Poll::Ready(Ok::<bool, std::io::Error>(false));
                }
                if self.safety.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(true));
                }
                Poll::Pending
            })
            .await
            .map_err(|e| Error::io("wait on ZMQ_FD", e))?;
            if !timer {
                Counters::bump(&self.counters.inner.fd_wakeups);
                return Ok(());
            }
            self.check_missed(zmq::POLLIN)?;
            self.safety
                .as_mut()
                .reset(Instant::now() + self.safety_interval);
            if self.events()?.contains(zmq::POLLIN) {
                return Ok(());
            }
        }
    }
}
