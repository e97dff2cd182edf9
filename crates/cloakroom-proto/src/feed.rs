//! The revocation feed: what the daemon's PUB socket sends, and a tracker that tells a
//! subscriber when to empty its cache.

use rmpv::Value;

use crate::body::{self, id_hash_value, opt_string_value, MapBuilder};
use crate::error::{DecodeError, ErrorKind};
use crate::frame::{shown, PROTOCOL};
use crate::msgpack;
use crate::types::{IdHash, Limits};

/// The topic of a revoked session.
pub const TOPIC_SESSION: &str = "revoke.session";
/// The topic of a revoked user (every session of the user, maybe but one).
pub const TOPIC_USER: &str = "revoke.user";
/// The topic of the heartbeat, which carries the last sequence number used.
pub const TOPIC_HEARTBEAT: &str = "feed.heartbeat";

/// What a feed message announces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedEvent {
    /// `revoke.session`: this session is gone; drop it from any cache.
    Session {
        /// The session.
        id_hash: IdHash,
        /// Its user, if it had one.
        user_id: Option<String>,
        /// The user's epoch at the time (0 without a user).
        epoch: u64,
    },
    /// `revoke.user`: every session of the user is gone, except `except`; sessions of an
    /// epoch below `epoch` are dead.
    User {
        /// The user.
        user_id: String,
        /// The user's epoch now.
        epoch: u64,
        /// The one session kept (`SIGN_OUT_OTHERS`), if any.
        except: Option<IdHash>,
    },
    /// `feed.heartbeat`: nothing happened; `seq` is the last sequence number used.
    Heartbeat,
}

/// One message of the feed: `[topic, "CRP1", body]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedMessage {
    /// Random per daemon process: a new value means the daemon restarted and its
    /// sequence numbers started again.
    pub stream: [u8; 8],
    /// Counts revocations of this stream from 1 with no gaps. A heartbeat repeats the last
    /// one (0 before the first revocation).
    pub seq: u64,
    /// What happened.
    pub event: FeedEvent,
}

impl FeedMessage {
    /// A feed message.
    pub fn new(stream: [u8; 8], seq: u64, event: FeedEvent) -> Self {
        Self { stream, seq, event }
    }

    /// The topic frame.
    pub fn topic(&self) -> &'static str {
        match self.event {
            FeedEvent::Session { .. } => TOPIC_SESSION,
            FeedEvent::User { .. } => TOPIC_USER,
            FeedEvent::Heartbeat => TOPIC_HEARTBEAT,
        }
    }

    /// The three frames the PUB socket sends.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let m = MapBuilder::new()
            .put("stream", Value::Binary(self.stream.to_vec()))
            .put("seq", self.seq);
        let body = match &self.event {
            FeedEvent::Session {
                id_hash,
                user_id,
                epoch,
            } => m
                .put("id_hash", id_hash_value(id_hash))
                .put("user_id", opt_string_value(user_id))
                .put("epoch", *epoch),
            FeedEvent::User {
                user_id,
                epoch,
                except,
            } => m
                .put("user_id", user_id.as_str())
                .put("epoch", *epoch)
                .put("except", except.as_ref().map_or(Value::Nil, id_hash_value)),
            FeedEvent::Heartbeat => m,
        };
        vec![
            self.topic().as_bytes().to_vec(),
            PROTOCOL.as_bytes().to_vec(),
            msgpack::encode(&body.build()),
        ]
    }

    /// Decodes the frames a SUB socket received.
    ///
    /// # Errors
    /// A [`DecodeError`] (always dropped). A subscriber treats a message it cannot decode
    /// as a gap: it empties its cache.
    pub fn decode<B: AsRef<[u8]>>(frames: &[B], limits: &Limits) -> Result<Self, DecodeError> {
        let [topic, version, body] = frames else {
            return Err(DecodeError::new(
                ErrorKind::Unreadable,
                format!("{} frames; a feed message has 3", frames.len()),
            ));
        };
        if version.as_ref() != PROTOCOL.as_bytes() {
            return Err(DecodeError::new(
                ErrorKind::BadVersion,
                format!("unsupported feed version {}", shown(version.as_ref())),
            ));
        }
        let topic = topic.as_ref();
        let mut f = body::read(body.as_ref(), limits)?;
        let stream = match f.value("stream") {
            Some(Value::Binary(b)) => <[u8; 8]>::try_from(b.as_slice()).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            DecodeError::new(
                ErrorKind::Malformed,
                "field `stream`: expected 8 bytes (bin 8)",
            )
        })?;
        let seq = f.u64("seq")?;
        let event = if topic == TOPIC_SESSION.as_bytes() {
            FeedEvent::Session {
                id_hash: f.id_hash("id_hash")?,
                user_id: f.opt_string("user_id")?,
                epoch: f.u64("epoch")?,
            }
        } else if topic == TOPIC_USER.as_bytes() {
            FeedEvent::User {
                user_id: f.string("user_id")?,
                epoch: f.u64("epoch")?,
                except: f.opt_id_hash("except")?,
            }
        } else if topic == TOPIC_HEARTBEAT.as_bytes() {
            FeedEvent::Heartbeat
        } else {
            return Err(DecodeError::new(
                ErrorKind::UnknownVerb,
                format!("unknown feed topic {}", shown(topic)),
            ));
        };
        Ok(Self { stream, seq, event })
    }
}

/// What a subscriber does after a message, as [`FeedTracker::observe`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedCheck {
    /// In sequence: apply the event (drop the sessions it names) and carry on.
    InOrder,
    /// Empty the whole cache (a gap, a new stream, a first message, a sequence number
    /// that went backwards), then apply the event; caching may resume at once.
    Resync,
}

/// Follows one daemon's feed and says when a subscriber must resync. Sans-IO: feed it
/// every message in arrival order (and call [`FeedTracker::lost`] for any message that
/// did not decode, or when the feed has been silent for longer than three heartbeats).
#[derive(Debug, Clone, Default)]
pub struct FeedTracker {
    at: Option<([u8; 8], u64)>,
}

impl FeedTracker {
    /// A tracker that has seen nothing: its first message answers [`FeedCheck::Resync`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one message against the last.
    pub fn observe(&mut self, message: &FeedMessage) -> FeedCheck {
        let expected = match (self.at, &message.event) {
            (Some((stream, last)), FeedEvent::Heartbeat) if stream == message.stream => Some(last),
            (Some((stream, last)), _) if stream == message.stream => last.checked_add(1),
            _ => None,
        };
        self.at = Some((message.stream, message.seq));
        if expected == Some(message.seq) {
            FeedCheck::InOrder
        } else {
            FeedCheck::Resync
        }
    }

    /// Forgets the position: the next message answers [`FeedCheck::Resync`]. Call it for
    /// an undecodable message or a silent feed, and empty the cache then too.
    pub fn lost(&mut self) {
        self.at = None;
    }
}
