//! libzmq sockets inside tokio: edge-triggered `ZMQ_FD` handled fairly, with no lost wakeup
//! and no busy wait.
//!
//! One task owns each [`Socket`]; it receives with [`Socket::recv`] and sends with
//! [`Socket::send`], and worker tasks hand it replies through a [`ReplySender`]. The loop
//! follows the rules of `docs/zmq-event-loop.md` (drain to `EAGAIN` under a budget, wait on the
//! descriptor only after `ZMQ_EVENTS` shows nothing, clear readiness before re-checking,
//! re-check after every send, count lost wakeups); that page explains each.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cloakroom_zmq::Error> {
//! use cloakroom_zmq::{Socket, SocketKind};
//!
//! let ctx = zmq::Context::new();
//! let mut server = Socket::new(&ctx, SocketKind::Router)?;
//! server.bind("tcp://127.0.0.1:*")?;
//! let mut client = Socket::new(&ctx, SocketKind::Dealer)?;
//! client.connect(&server.last_endpoint()?)?;
//!
//! client.send(vec!["ping".into()]).await?;
//! let request = server.recv().await?;            // [peer id, "ping"]
//! let replies = server.reply_sender();            // clone it into worker tasks
//! tokio::spawn(async move {
//!     let reply = vec![zmq::Message::from(&request[0][..]), "pong".into()];
//!     replies.send(reply).unwrap();
//! });
//! let _ = tokio::time::timeout(std::time::Duration::from_millis(50), server.recv()).await;
//! let reply = client.recv().await?;               // the owner sent it while it waited
//! assert_eq!(&reply[0][..], b"pong");
//! assert_eq!(server.counters().missed_wakeups(), 0);
//! # Ok(()) }
//! ```
//!
//! # Safe to serve strangers
//!
//! - **CURVE fails closed.** [`Socket::curve_server`] keeps its [`ZapHandler`] alive as long
//!   as the socket, and sets `ZMQ_ZAP_ENFORCE_DOMAIN`, so a missing handler (task killed,
//!   runtime shut down, wrong context) means every client is refused, never admitted. The
//!   handler logs errors and serves on, and answers malformed requests "400".
//! - **No peer waits for another.** A reply libzmq cannot take (`EAGAIN`: that peer is at
//!   its high-water mark) is held in that peer's own queue, bounded
//!   ([`SocketBuilder::held_replies`], 256 per peer, 16,384 in all; the excess dropped and
//!   counted in [`Counters::shed_replies`]); replies to other peers go on at once.
//! - **Bounded memory.** The reply queue is bounded ([`SocketBuilder::reply_queue`], 1024):
//!   [`ReplySender::send`] refuses with [`ErrorKind::Full`], [`ReplySender::send_wait`]
//!   waits. Messages are limited to 1 MiB unless configured
//!   ([`SocketBuilder::max_message_size`]).
//! - **Writes are budgeted like reads**: sending queued replies spends the drain budget, so
//!   a big writer yields to the runtime every 64 messages.
//!
//! # Which libzmq, and CURVE
//!
//! The `zmq` crate's `zmq-sys` always builds libzmq 4.3.4 from source, and that build has
//! no CURVE (it would need libsodium, and zmq-sys does not ask for it). The session daemon
//! needs CURVE for any non-loopback listener, so this workspace links **Debian's libzmq**
//! (`libzmq3-dev`, 4.3.4, CURVE through libsodium) instead: the workspace's
//! `.cargo/config.toml` overrides the build script of the `links = "zmq"` package for
//! `x86_64-unknown-linux-gnu` with `rustc-link-lib = ["zmq"]`, and
//! `scripts/setup.d/20-zmq.sh` installs `libzmq3-dev` (so `scripts/test` still works on a
//! fresh machine). Why this route and not a cargo-only one:
//!
//! - there is exactly one libzmq in every binary: `zmq`, `tmq` (used by the benchmark) and
//!   this crate all go through the one `zmq-sys`, whose build is replaced, so no second
//!   static copy can be linked in beside another;
//! - a cargo-only route (our own `zmq-sys`-compatible crate building libzmq against a
//!   bundled libsodium) means patching `zmq-sys` for the whole workspace and about two
//!   minutes of C/C++ build on every clean machine, for a library the distribution ships;
//! - the cost: every Linux host of ours needs `libzmq5` at run time (the daemon's package
//!   depends on it), and other targets (the FreeBSD check) still build zmq-sys's vendored
//!   copy, without CURVE; the FreeBSD port links the ports tree's libzmq4, which has it.
//!
//! [`curve_available`] tells at run time; [`CurveKeyPair`], [`ZapHandler`],
//! [`Socket::curve_server`] and [`Socket::curve_client`] set it up.
//!
//! # Unsafe
//!
//! The only `unsafe` of the workspace is in this crate, each block with a `// SAFETY:`
//! line: in the library, registering libzmq's descriptor with tokio
//! (`AsyncFd::register_with_interest`), one `poll(2)` of it in the safety timer, and one
//! raw `zmq_setsockopt` for `ZMQ_ZAP_ENFORCE_DOMAIN` (which the `zmq` crate does not wrap);
//! in the tests `getrusage(2)`, in the benchmark `sched_setaffinity(2)`.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod curve;
mod error;
mod socket;

// The API: the socket and its builder, replies from workers, counters, CURVE, errors.
pub use crate::curve::{curve_available, CurveKeyPair, ZapHandler};
pub use crate::error::{Error, ErrorKind, Result};
#[cfg(feature = "broken-variants")]
#[doc(hidden)]
pub use crate::socket::Broken;
pub use crate::socket::{
    Counters, Multipart, ReplySender, Socket, SocketBuilder, SocketKind, DEFAULT_BUDGET,
    DEFAULT_HELD_PER_PEER, DEFAULT_HELD_TOTAL, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_REPLY_QUEUE,
    DEFAULT_SAFETY_INTERVAL,
};
/// The `zmq` crate this one is built on (for `zmq::Context`, `zmq::Message`).
pub use zmq;
