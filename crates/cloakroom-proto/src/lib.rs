//! CRP1, the wire protocol of the Cloakroom session daemon (`cloakroomd`).
//!
//! This crate turns typed requests and replies into ZeroMQ frames and back. It is sans-IO:
//! it opens no socket and reads no clock. The daemon and every Rust client use it; clients
//! in other languages are written from `docs/protocol.md`, whose byte examples this crate's
//! tests check.
//!
//! - A request is five frames after the ROUTER's routing id:
//!   `["", "CRP1", request id (8 bytes), verb, body]`; a reply is
//!   `["", "CRP1", request id, status, body]`. Bodies are one MessagePack map.
//! - [`Request::decode`] never panics. A message whose first three frames are unreadable
//!   is dropped ([`Action::Drop`]); anything later is answered with the status the
//!   [`DecodeError`] names ([`DecodeError::reply`]). Size limits ([`Limits`]) are checked
//!   before anything is allocated.
//! - The revocation feed ([`FeedMessage`]) and a [`FeedTracker`] that tells a subscriber
//!   when a gap means emptying its cache.
//!
//! ```
//! use cloakroom_proto::{Action, Limits, Reply, Request, RequestId, Status, Verb};
//!
//! // A client sends PING ...
//! let frames = Request::Ping.encode(RequestId::from_u64(1));
//! assert_eq!(frames[3], b"PING");
//!
//! // ... the daemon decodes it and answers.
//! let (id, request) = Request::decode(&frames, &Limits::default())?;
//! assert_eq!(request, Request::Ping);
//! let answer = Reply::pong("0.1.0").encode(id);
//!
//! // The client matches the reply to its request by id, and decodes it by verb.
//! let (id, reply) = Reply::decode(&answer, Verb::Ping, &Limits::default())?;
//! assert_eq!(id, RequestId::from_u64(1));
//! assert_eq!(reply, Reply::pong("0.1.0"));
//!
//! // A bad request is answered with its request id, or dropped when it has none.
//! let mut bad = frames.clone();
//! bad[3] = b"FLY".to_vec();
//! let err = Request::decode(&bad, &Limits::default()).unwrap_err();
//! assert_eq!(err.status(), Some(Status::UnknownVerb));
//! let err = Request::decode(&frames[..2], &Limits::default()).unwrap_err();
//! assert_eq!(err.action(), Action::Drop);
//! # Ok::<(), cloakroom_proto::DecodeError>(())
//! ```
//!
//! # Why this crate does not depend on `cloakroom`
//!
//! The wire types ([`Record`], [`Device`], [`Change`]) mirror `cloakroom`'s, and the daemon
//! converts between them. Owning them here keeps the protocol a leaf: a client or a fuzz
//! target builds it without the session core's async runtime traits, token crypto and
//! random number generator, and a change to the session core's structs cannot change the
//! bytes on the wire without a change to this crate, which is where the protocol version
//! and its document live.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod body;
mod error;
mod feed;
mod frame;
mod msgpack;
mod reply;
mod request;
mod types;
mod verb;

// Messages and their frames.
pub use frame::PROTOCOL;
pub use reply::Reply;
pub use request::Request;
pub use verb::{Status, Verb, MAX_WORD_LEN};
// What a bad message is, and what to do with it.
pub use error::{Action, DecodeError, ErrorKind};
// Values in bodies.
pub use types::{
    Change, Data, Device, Flash, IdHash, IssuedCookie, Limits, OpenedSession, Record, RequestId,
    Secret,
};
// The revocation feed.
pub use feed::{
    FeedCheck, FeedEvent, FeedMessage, FeedTracker, TOPIC_HEARTBEAT, TOPIC_SESSION, TOPIC_USER,
};
// MessagePack values, as data values are typed.
pub use rmpv::Value;
