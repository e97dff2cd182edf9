//! Replies: what the daemon answers.

use rmpv::Value;

use crate::body::{self, data_value, flash_value, id_hash_value, record_value, MapBuilder};
use crate::error::{DecodeError, ErrorKind};
use crate::frame::{self, shown, PROTOCOL};
use crate::msgpack;
use crate::types::{IssuedCookie, Limits, OpenedSession, Record, RequestId, Secret};
use crate::verb::{Status, Verb};

/// One reply: an `OK` answer of the shape its verb defines, or an error status with a
/// one-line message. Which `OK` shape a verb answers is in `docs/protocol.md` and
/// [`Reply::decode`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// `PING`: `{"protocol": "CRP1", "version": …}`.
    Pong {
        /// The protocol version, `CRP1`.
        protocol: String,
        /// The daemon's version.
        version: String,
    },
    /// `CREATE`, `TOUCH`: `{}`.
    Done,
    /// `LOAD`: `{"record": …}`.
    Record(Box<Record>),
    /// `UPDATE`: `{"version": n}`, the record's new version.
    Version(u64),
    /// `APPLY`: `{"version": n, "idle_deadline": t}`, the record's new version and the idle
    /// deadline it has now (what `Store::apply` returns).
    Applied {
        /// The record's new version.
        version: u64,
        /// The record's idle deadline after the write (never earlier than before).
        idle_deadline: u64,
    },
    /// `DELETE`: `{"deleted": bool}`, whether there was a record.
    Deleted(bool),
    /// `SESSIONS_OF`, `FIND_PREFIX`: `{"sessions": [record, …]}`.
    Sessions(Vec<Record>),
    /// `REVOKE_USER_SESSIONS`, `SIGN_OUT_OTHERS`: `{"revoked": n}`, sessions ended.
    Revoked(u64),
    /// `USER_EPOCH`, `BUMP_USER_EPOCH`: `{"epoch": n}`.
    Epoch(u64),
    /// `PURGE_EXPIRED`: `{"purged": n}`.
    Purged(u64),
    /// `OPEN`: the session.
    Opened(Box<OpenedSession>),
    /// `ISSUE`, `LOGIN`: the new session's cookie.
    Issued(IssuedCookie),
    /// `LOGOUT`, `END_SESSION`: `{"ended": bool}`, whether a session was ended.
    Ended(bool),
    /// `SET`, `REMOVE`, `FLASH`: `{"cookie": value or nil}`: a cookie to send (a session
    /// was created, or the cookie reissued), or nil to keep the current one.
    Cookie(Option<Secret>),
    /// `CSRF` without `verify`: `{"token": …}`.
    CsrfToken(Secret),
    /// `CSRF` with `verify`: `{"valid": bool}`.
    CsrfValid(bool),
    /// `REVOKE_USER`: `{"revoked": n, "epoch": n}`.
    UserRevoked {
        /// Sessions ended.
        revoked: u64,
        /// The user's new epoch.
        epoch: u64,
    },
    /// `STATS`: `{"live": n, "expired_not_purged": n, "bytes": n or nil}`.
    Stats {
        /// Records live at the request's `now`.
        live: u64,
        /// Records no longer live, not yet purged.
        expired_not_purged: u64,
        /// The bytes the records take, when the store can tell.
        bytes: Option<u64>,
    },
    /// Any status but `OK`: `{"error": "<one line>"}`.
    Error {
        /// The status; never [`Status::Ok`] (encoded as `INTERNAL` if it is).
        status: Status,
        /// One line a person can read.
        message: String,
    },
}

impl Reply {
    /// An error reply. A multi-line message is cut at its first line break.
    pub fn error(status: Status, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if let Some(at) = message.find(['\r', '\n']) {
            message.truncate(at);
        }
        Self::Error { status, message }
    }

    /// The `PING` answer of a daemon of this `version`.
    pub fn pong(version: impl Into<String>) -> Self {
        Self::Pong {
            protocol: PROTOCOL.into(),
            version: version.into(),
        }
    }

    /// The status word this reply is sent with.
    pub fn status(&self) -> Status {
        match self {
            Self::Error {
                status: Status::Ok, ..
            } => Status::Internal,
            Self::Error { status, .. } => *status,
            _ => Status::Ok,
        }
    }

    /// The five frames the daemon sends after the routing id:
    /// `["", "CRP1", id, status, body]`.
    pub fn encode(&self, id: RequestId) -> Vec<Vec<u8>> {
        frame::assemble(id, self.status().as_str(), msgpack::encode(&self.body()))
    }

    fn body(&self) -> Value {
        let m = MapBuilder::new();
        match self {
            Self::Pong { protocol, version } => m
                .put("protocol", protocol.as_str())
                .put("version", version.as_str()),
            Self::Done => m,
            Self::Record(record) => m.put("record", record_value(record)),
            Self::Version(v) => m.put("version", *v),
            Self::Applied {
                version,
                idle_deadline,
            } => m
                .put("version", *version)
                .put("idle_deadline", *idle_deadline),
            Self::Deleted(b) => m.put("deleted", *b),
            Self::Sessions(records) => m.put(
                "sessions",
                Value::Array(records.iter().map(record_value).collect()),
            ),
            Self::Revoked(n) => m.put("revoked", *n),
            Self::Epoch(n) => m.put("epoch", *n),
            Self::Purged(n) => m.put("purged", *n),
            Self::Opened(s) => {
                let OpenedSession {
                    id_hash,
                    user_id,
                    data,
                    flashes,
                    csrf,
                    expires_at,
                    cookie,
                } = &**s;
                m.put("id_hash", id_hash_value(id_hash))
                    .put("user_id", body::opt_string_value(user_id))
                    .put("data", data_value(data))
                    .put(
                        "flashes",
                        Value::Array(flashes.iter().map(flash_value).collect()),
                    )
                    .put("csrf", csrf.expose())
                    .put("expires_at", *expires_at)
                    .put(
                        "cookie",
                        cookie.as_ref().map_or(Value::Nil, |c| c.expose().into()),
                    )
            }
            Self::Issued(IssuedCookie {
                cookie,
                id_hash,
                expires_at,
            }) => m
                .put("cookie", cookie.expose())
                .put("id_hash", id_hash_value(id_hash))
                .put("expires_at", *expires_at),
            Self::Ended(b) => m.put("ended", *b),
            Self::Cookie(c) => m.put(
                "cookie",
                c.as_ref().map_or(Value::Nil, |c| c.expose().into()),
            ),
            Self::CsrfToken(t) => m.put("token", t.expose()),
            Self::CsrfValid(b) => m.put("valid", *b),
            Self::UserRevoked { revoked, epoch } => m.put("revoked", *revoked).put("epoch", *epoch),
            Self::Stats {
                live,
                expired_not_purged,
                bytes,
            } => m
                .put("live", *live)
                .put("expired_not_purged", *expired_not_purged)
                .put("bytes", bytes.map_or(Value::Nil, Value::from)),
            Self::Error { message, .. } => m.put("error", message.as_str()),
        }
        .build()
    }

    /// Decodes a reply a DEALER received, given the verb of the request it answers (look
    /// it up by request id with [`peek_id`](Reply::peek_id)).
    ///
    /// # Errors
    /// A [`DecodeError`], always [`Action::Drop`](crate::Action::Drop): a reply is never
    /// answered. A reply whose request id the caller does not know should be dropped too.
    pub fn decode<B: AsRef<[u8]>>(
        frames: &[B],
        verb: Verb,
        limits: &Limits,
    ) -> Result<(RequestId, Self), DecodeError> {
        let split = frame::split(frames).map_err(DecodeError::dropped)?;
        let Some(status) = Status::from_bytes(split.word) else {
            return Err(DecodeError::new(
                ErrorKind::UnknownStatus,
                format!("unknown status {}", shown(split.word)),
            ));
        };
        let mut f = body::read(split.body, limits)?;
        let reply = (|| {
            if status != Status::Ok {
                return Ok(Self::error(status, f.string("error")?));
            }
            Ok(match verb {
                Verb::Ping => Self::Pong {
                    protocol: f.string("protocol")?,
                    version: f.string("version")?,
                },
                Verb::Create | Verb::Touch => Self::Done,
                Verb::Load => Self::Record(Box::new(f.record("record")?)),
                Verb::Update => Self::Version(f.u64("version")?),
                Verb::Apply => Self::Applied {
                    version: f.u64("version")?,
                    idle_deadline: f.u64("idle_deadline")?,
                },
                Verb::Delete => Self::Deleted(f.bool("deleted")?),
                Verb::SessionsOf | Verb::FindPrefix => Self::Sessions(f.records("sessions")?),
                Verb::Stats => Self::Stats {
                    live: f.u64("live")?,
                    expired_not_purged: f.u64("expired_not_purged")?,
                    bytes: f.opt_u64("bytes")?,
                },
                Verb::RevokeUserSessions | Verb::SignOutOthers => Self::Revoked(f.u64("revoked")?),
                Verb::UserEpoch | Verb::BumpUserEpoch => Self::Epoch(f.u64("epoch")?),
                Verb::PurgeExpired => Self::Purged(f.u64("purged")?),
                Verb::Open => Self::Opened(Box::new(OpenedSession {
                    id_hash: f.id_hash("id_hash")?,
                    user_id: f.opt_string("user_id")?,
                    data: f.opt_data("data")?,
                    flashes: f.flashes("flashes")?,
                    csrf: f.secret("csrf")?,
                    expires_at: f.u64("expires_at")?,
                    cookie: f.opt_secret("cookie")?,
                })),
                Verb::Issue | Verb::Login => Self::Issued(IssuedCookie {
                    cookie: f.secret("cookie")?,
                    id_hash: f.id_hash("id_hash")?,
                    expires_at: f.u64("expires_at")?,
                }),
                Verb::Logout | Verb::EndSession => Self::Ended(f.bool("ended")?),
                Verb::Set | Verb::Remove | Verb::Flash => Self::Cookie(f.opt_secret("cookie")?),
                Verb::Csrf => match (f.opt_secret("token")?, f.opt_bool("valid")?) {
                    (Some(token), None) => Self::CsrfToken(token),
                    (None, Some(valid)) => Self::CsrfValid(valid),
                    _ => {
                        return Err(DecodeError::new(
                            ErrorKind::Malformed,
                            "needs exactly one of `token` and `valid`",
                        ))
                    }
                },
                Verb::RevokeUser => Self::UserRevoked {
                    revoked: f.u64("revoked")?,
                    epoch: f.u64("epoch")?,
                },
            })
        })();
        reply.map(|r| (split.id, r)).map_err(|e: DecodeError| {
            DecodeError::new(
                e.kind(),
                format!("{status} reply to {verb}: {}", e.message()),
            )
        })
    }

    /// The request id of a reply, if its first three frames are readable and its version
    /// is `CRP1`: what a client matches replies to requests in flight with.
    pub fn peek_id<B: AsRef<[u8]>>(frames: &[B]) -> Option<RequestId> {
        frame::split(frames).ok().map(|s| s.id)
    }
}
