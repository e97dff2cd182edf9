//! Requests: what a client sends.

use rmpv::Value;

use crate::body::{
    self, change_value, data_value, device_value, id_hash_value, record_value, MapBuilder,
};
use crate::error::{DecodeError, ErrorKind};
use crate::frame::{self, shown};
use crate::msgpack;
use crate::types::{Change, Data, Device, IdHash, Limits, Record, RequestId, Secret};
use crate::verb::Verb;

/// One request, by verb, with its typed body. `docs/protocol.md` gives each body's fields.
///
/// Store verbs carry `now` (unix seconds) because a store call takes the caller's clock;
/// cookie verbs use the daemon's clock.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `PING {}`.
    Ping,
    /// `CREATE`: store a new record.
    Create {
        /// The record, at version 1.
        record: Record,
        /// The caller's clock: an existing record live at `now` is a conflict. `None` (a
        /// client from before this field) judges it at the record's `last_seen`.
        now: Option<u64>,
    },
    /// `LOAD`: the live record of an id hash.
    Load {
        /// The session.
        id_hash: IdHash,
        /// The caller's clock.
        now: u64,
    },
    /// `UPDATE`: replace a record if its stored version is still `record.version`.
    Update {
        /// The record with the version it was loaded at.
        record: Record,
        /// The caller's clock.
        now: u64,
    },
    /// `APPLY`: apply per-key changes to the stored record atomically and slide its idle
    /// deadline.
    Apply {
        /// The session.
        id_hash: IdHash,
        /// The changes, applied in order.
        changes: Vec<Change>,
        /// The caller's clock.
        now: u64,
        /// The new idle deadline.
        idle_deadline: u64,
    },
    /// `TOUCH`: slide the idle deadline.
    Touch {
        /// The session.
        id_hash: IdHash,
        /// The caller's clock.
        now: u64,
        /// The new idle deadline.
        idle_deadline: u64,
    },
    /// `DELETE`: delete a record.
    Delete {
        /// The session.
        id_hash: IdHash,
    },
    /// `SESSIONS_OF`: the live records of a user.
    SessionsOf {
        /// The user.
        user_id: String,
        /// The caller's clock; `None` uses the daemon's.
        now: Option<u64>,
    },
    /// `REVOKE_USER_SESSIONS`: delete a user's records, except one.
    RevokeUserSessions {
        /// The user.
        user_id: String,
        /// The session to keep.
        except: Option<IdHash>,
    },
    /// `USER_EPOCH`: read a user's epoch.
    UserEpoch {
        /// The user.
        user_id: String,
    },
    /// `BUMP_USER_EPOCH`: increment a user's epoch.
    BumpUserEpoch {
        /// The user.
        user_id: String,
    },
    /// `PURGE_EXPIRED`: delete at most `limit` expired records.
    PurgeExpired {
        /// The caller's clock.
        now: u64,
        /// The batch size.
        limit: u64,
    },
    /// `FIND_PREFIX`: the live records whose id hash, in hex, starts with `prefix`.
    FindPrefix {
        /// 1 to 64 lower-case hex digits.
        prefix: String,
        /// The caller's clock; `None` uses the daemon's.
        now: Option<u64>,
    },
    /// `STATS`: how many records are live and how many expired but not purged.
    Stats {
        /// The caller's clock; `None` uses the daemon's.
        now: Option<u64>,
    },
    /// `OPEN`: the session behind a cookie value.
    Open {
        /// The cookie value as the browser sent it.
        cookie: Secret,
        /// Take (remove) the pending flash messages as they are returned.
        take_flashes: bool,
    },
    /// `ISSUE`: create a session and mint its cookie.
    Issue {
        /// The user to log in, if any.
        user_id: Option<String>,
        /// Initial data.
        data: Data,
        /// Device metadata.
        device: Device,
    },
    /// `LOGIN`: log a user in; the session gets a new id (and a new CSRF secret), keeping
    /// the data of the cookie's session if there is one.
    Login {
        /// The current cookie, if the visitor has one.
        cookie: Option<Secret>,
        /// The user.
        user_id: String,
        /// Device metadata.
        device: Device,
    },
    /// `LOGOUT`: end the cookie's session.
    Logout {
        /// The cookie value.
        cookie: Secret,
    },
    /// `SET`: per-key changes to the cookie's session (created if there is no cookie).
    Set {
        /// The cookie value, if the visitor has one.
        cookie: Option<Secret>,
        /// The changes, applied in order.
        changes: Vec<Change>,
    },
    /// `REMOVE`: remove keys from the cookie's session.
    Remove {
        /// The cookie value.
        cookie: Secret,
        /// The keys.
        keys: Vec<String>,
    },
    /// `FLASH`: queue a flash message in the cookie's session (created if there is no
    /// cookie).
    Flash {
        /// The cookie value, if the visitor has one.
        cookie: Option<Secret>,
        /// The level.
        level: String,
        /// The text.
        message: String,
    },
    /// `CSRF`: a freshly masked token for a page, or (with `verify`) check a token.
    Csrf {
        /// The cookie value.
        cookie: Secret,
        /// The token the browser sent, to verify.
        verify: Option<Secret>,
    },
    /// `SIGN_OUT_OTHERS`: end every session of the cookie's user but this one.
    SignOutOthers {
        /// The cookie value.
        cookie: Secret,
    },
    /// `REVOKE_USER`: end every session of a user and bump the user's epoch.
    RevokeUser {
        /// The user.
        user_id: String,
    },
    /// `END_SESSION`: end one session by id hash (a "your sessions" page).
    EndSession {
        /// The session.
        id_hash: IdHash,
        /// When given, the session must belong to this user.
        user_id: Option<String>,
    },
}

impl Request {
    /// The verb.
    pub fn verb(&self) -> Verb {
        match self {
            Self::Ping => Verb::Ping,
            Self::Create { .. } => Verb::Create,
            Self::Load { .. } => Verb::Load,
            Self::Update { .. } => Verb::Update,
            Self::Apply { .. } => Verb::Apply,
            Self::Touch { .. } => Verb::Touch,
            Self::Delete { .. } => Verb::Delete,
            Self::SessionsOf { .. } => Verb::SessionsOf,
            Self::RevokeUserSessions { .. } => Verb::RevokeUserSessions,
            Self::UserEpoch { .. } => Verb::UserEpoch,
            Self::BumpUserEpoch { .. } => Verb::BumpUserEpoch,
            Self::PurgeExpired { .. } => Verb::PurgeExpired,
            Self::FindPrefix { .. } => Verb::FindPrefix,
            Self::Stats { .. } => Verb::Stats,
            Self::Open { .. } => Verb::Open,
            Self::Issue { .. } => Verb::Issue,
            Self::Login { .. } => Verb::Login,
            Self::Logout { .. } => Verb::Logout,
            Self::Set { .. } => Verb::Set,
            Self::Remove { .. } => Verb::Remove,
            Self::Flash { .. } => Verb::Flash,
            Self::Csrf { .. } => Verb::Csrf,
            Self::SignOutOthers { .. } => Verb::SignOutOthers,
            Self::RevokeUser { .. } => Verb::RevokeUser,
            Self::EndSession { .. } => Verb::EndSession,
        }
    }

    /// The five frames a DEALER client sends: `["", "CRP1", id, verb, body]`. (The ROUTER
    /// adds the routing id in front on the daemon's side.)
    pub fn encode(&self, id: RequestId) -> Vec<Vec<u8>> {
        frame::assemble(id, self.verb().as_str(), msgpack::encode(&self.body()))
    }

    /// The body map, fields in the documented order.
    fn body(&self) -> Value {
        let m = MapBuilder::new();
        let secret = |s: &Secret| Value::from(s.expose());
        let strings =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        let changes = |v: &[Change]| Value::Array(v.iter().map(change_value).collect());
        match self {
            Self::Ping => m,
            Self::Create { record, now } => m.put("record", record_value(record)).opt("now", *now),
            Self::Load { id_hash, now } => {
                m.put("id_hash", id_hash_value(id_hash)).put("now", *now)
            }
            Self::Update { record, now } => m.put("record", record_value(record)).put("now", *now),
            Self::Apply {
                id_hash,
                changes: c,
                now,
                idle_deadline,
            } => m
                .put("id_hash", id_hash_value(id_hash))
                .put("changes", changes(c))
                .put("now", *now)
                .put("idle_deadline", *idle_deadline),
            Self::Touch {
                id_hash,
                now,
                idle_deadline,
            } => m
                .put("id_hash", id_hash_value(id_hash))
                .put("now", *now)
                .put("idle_deadline", *idle_deadline),
            Self::Delete { id_hash } => m.put("id_hash", id_hash_value(id_hash)),
            Self::SessionsOf { user_id, now } => {
                m.put("user_id", user_id.as_str()).opt("now", *now)
            }
            Self::RevokeUserSessions { user_id, except } => m
                .put("user_id", user_id.as_str())
                .opt("except", except.as_ref().map(id_hash_value)),
            Self::UserEpoch { user_id }
            | Self::BumpUserEpoch { user_id }
            | Self::RevokeUser { user_id } => m.put("user_id", user_id.as_str()),
            Self::PurgeExpired { now, limit } => m.put("now", *now).put("limit", *limit),
            Self::FindPrefix { prefix, now } => m.put("prefix", prefix.as_str()).opt("now", *now),
            Self::Stats { now } => m.opt("now", *now),
            Self::Open {
                cookie,
                take_flashes,
            } => m
                .put("cookie", secret(cookie))
                .put("take_flashes", *take_flashes),
            Self::Issue {
                user_id,
                data,
                device,
            } => m
                .opt("user_id", user_id.as_deref())
                .put("data", data_value(data))
                .put("device", device_value(device)),
            Self::Login {
                cookie,
                user_id,
                device,
            } => m
                .opt("cookie", cookie.as_ref().map(secret))
                .put("user_id", user_id.as_str())
                .put("device", device_value(device)),
            Self::Logout { cookie } | Self::SignOutOthers { cookie } => {
                m.put("cookie", secret(cookie))
            }
            Self::Set { cookie, changes: c } => m
                .opt("cookie", cookie.as_ref().map(secret))
                .put("changes", changes(c)),
            Self::Remove { cookie, keys } => {
                m.put("cookie", secret(cookie)).put("keys", strings(keys))
            }
            Self::Flash {
                cookie,
                level,
                message,
            } => m
                .opt("cookie", cookie.as_ref().map(secret))
                .put("level", level.as_str())
                .put("message", message.as_str()),
            Self::Csrf { cookie, verify } => m
                .put("cookie", secret(cookie))
                .opt("verify", verify.as_ref().map(secret)),
            Self::EndSession { id_hash, user_id } => m
                .put("id_hash", id_hash_value(id_hash))
                .opt("user_id", user_id.as_deref()),
        }
        .build()
    }

    /// Decodes the frames a ROUTER received, after its routing id.
    ///
    /// The checks run in the documented order: frame count, delimiter and request id (any
    /// failure: [`Action::Drop`](crate::Action::Drop)), then version, frame count, verb,
    /// body size and body (each answered with its status and the request id).
    ///
    /// # Errors
    /// A [`DecodeError`] whose [`action`](DecodeError::action) says whether to drop the
    /// message or answer it. Never panics, whatever the frames hold.
    pub fn decode<B: AsRef<[u8]>>(
        frames: &[B],
        limits: &Limits,
    ) -> Result<(RequestId, Self), DecodeError> {
        let split = frame::split(frames)?;
        let id = split.id;
        Self::decode_after_header(split.word, split.body, limits)
            .map(|request| (id, request))
            .map_err(|e| e.answer(id))
    }

    fn decode_after_header(word: &[u8], body: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let Some(verb) = Verb::from_bytes(word) else {
            return Err(DecodeError::new(
                ErrorKind::UnknownVerb,
                format!("unknown verb {}", shown(word)),
            ));
        };
        let mut f = body::read(body, limits)?;
        let with_verb = |e: DecodeError| {
            let kind = e.kind();
            DecodeError::new(kind, format!("{verb}: {}", e.message()))
        };
        let request = (|| {
            Ok(match verb {
                Verb::Ping => Self::Ping,
                Verb::Create => Self::Create {
                    record: f.record("record")?,
                    now: f.opt_u64("now")?,
                },
                Verb::Load => Self::Load {
                    id_hash: f.id_hash("id_hash")?,
                    now: f.u64("now")?,
                },
                Verb::Update => Self::Update {
                    record: f.record("record")?,
                    now: f.u64("now")?,
                },
                Verb::Apply => Self::Apply {
                    id_hash: f.id_hash("id_hash")?,
                    changes: f.changes("changes")?,
                    now: f.u64("now")?,
                    idle_deadline: f.u64("idle_deadline")?,
                },
                Verb::Touch => Self::Touch {
                    id_hash: f.id_hash("id_hash")?,
                    now: f.u64("now")?,
                    idle_deadline: f.u64("idle_deadline")?,
                },
                Verb::Delete => Self::Delete {
                    id_hash: f.id_hash("id_hash")?,
                },
                Verb::SessionsOf => Self::SessionsOf {
                    user_id: f.string("user_id")?,
                    now: f.opt_u64("now")?,
                },
                Verb::RevokeUserSessions => Self::RevokeUserSessions {
                    user_id: f.string("user_id")?,
                    except: f.opt_id_hash("except")?,
                },
                Verb::UserEpoch => Self::UserEpoch {
                    user_id: f.string("user_id")?,
                },
                Verb::BumpUserEpoch => Self::BumpUserEpoch {
                    user_id: f.string("user_id")?,
                },
                Verb::PurgeExpired => Self::PurgeExpired {
                    now: f.u64("now")?,
                    limit: f.u64("limit")?,
                },
                Verb::FindPrefix => Self::FindPrefix {
                    prefix: f.string("prefix")?,
                    now: f.opt_u64("now")?,
                },
                Verb::Stats => Self::Stats {
                    now: f.opt_u64("now")?,
                },
                Verb::Open => Self::Open {
                    cookie: f.secret("cookie")?,
                    take_flashes: f.opt_bool("take_flashes")?.unwrap_or(false),
                },
                Verb::Issue => Self::Issue {
                    user_id: f.opt_string("user_id")?,
                    data: f.opt_data("data")?,
                    device: f.device("device")?,
                },
                Verb::Login => Self::Login {
                    cookie: f.opt_secret("cookie")?,
                    user_id: f.string("user_id")?,
                    device: f.device("device")?,
                },
                Verb::Logout => Self::Logout {
                    cookie: f.secret("cookie")?,
                },
                Verb::Set => Self::Set {
                    cookie: f.opt_secret("cookie")?,
                    changes: f.changes("changes")?,
                },
                Verb::Remove => Self::Remove {
                    cookie: f.secret("cookie")?,
                    keys: f.strings("keys")?,
                },
                Verb::Flash => Self::Flash {
                    cookie: f.opt_secret("cookie")?,
                    level: f.string("level")?,
                    message: f.string("message")?,
                },
                Verb::Csrf => Self::Csrf {
                    cookie: f.secret("cookie")?,
                    verify: f.opt_secret("verify")?,
                },
                Verb::SignOutOthers => Self::SignOutOthers {
                    cookie: f.secret("cookie")?,
                },
                Verb::RevokeUser => Self::RevokeUser {
                    user_id: f.string("user_id")?,
                },
                Verb::EndSession => Self::EndSession {
                    id_hash: f.id_hash("id_hash")?,
                    user_id: f.opt_string("user_id")?,
                },
            })
        })();
        request.map_err(with_verb)
    }
}
