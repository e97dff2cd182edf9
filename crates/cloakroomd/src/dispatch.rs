//! One request to one reply: the store verbs here, the cookie verbs in `cookie_verbs`.

use std::sync::{Arc, RwLock};

use cloakroom::{Clock, KeyRing, SessionManager, Store};
use cloakroom_proto::{FeedEvent, Reply, Request, Status};
use cloakroom_stores::wire::{
    changes_from_wire, id_hash_from_wire, id_hash_to_wire, record_from_wire, record_to_wire,
};
use cloakroom_token::Codec;

use crate::feed::Feed;
use crate::metrics::Metrics;

/// What a key ring gives the cookie verbs; replaced whole on SIGHUP.
pub(crate) struct Keys {
    pub(crate) sessions: SessionManager,
    /// Verifies session cookies (to tell `INVALID` from `EXPIRED`).
    pub(crate) cookie_codec: Codec,
    /// Signs the anonymous CSRF cookie the manager reads (see `cookie_verbs::csrf_cookie`).
    pub(crate) csrf_codec: Codec,
    /// Derives an anonymous session's CSRF secret from its id hash.
    pub(crate) csrf_key: zeroize::Zeroizing<[u8; 32]>,
}

impl Keys {
    /// The cookie verbs' keys for cookies named `cookie_name` (the tokens' purpose).
    pub(crate) fn new(
        ring: &KeyRing,
        cookie_name: &str,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, cloakroom::Error> {
        let sessions = SessionManager::new(ring, store)?
            .with_cookie_name(cookie_name)?
            .with_clock(clock);
        let name = sessions.cookie_name().to_owned();
        let token = |e: cloakroom_token::Error| {
            cloakroom::Error::new(cloakroom::ErrorKind::Token, "key ring").with_source(e)
        };
        Ok(Self {
            cookie_codec: ring.codec(&name).map_err(token)?,
            csrf_codec: ring.codec(&format!("csrf:{name}")).map_err(token)?,
            csrf_key: cloakroom_token::derive_key(
                ring.primary().secret().expose(),
                "cloakroomd:",
                "anonymous-csrf",
            ),
            sessions,
        })
    }
}

/// Everything a request handler needs; shared by every request task.
pub(crate) struct State {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: RwLock<Arc<Keys>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) feed: Feed,
    pub(crate) metrics: Arc<Metrics>,
}

impl State {
    pub(crate) fn keys(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn replace_keys(&self, keys: Keys) {
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }
}

/// A store or session error as a reply. The message is the error's own (no id, no cookie:
/// neither crate puts one in a message).
pub(crate) fn error_reply(e: &cloakroom::Error) -> Reply {
    use cloakroom::ErrorKind as K;
    let status = match e.kind() {
        K::NotFound => Status::NotFound,
        K::Conflict => Status::Conflict,
        K::Unavailable => Status::Unavailable,
        // A damaged store is down, not empty (docs/architecture.md): the client fails
        // closed on CORRUPT as on UNAVAILABLE, and a remote store gets its `Corrupt` back.
        K::Corrupt => Status::Corrupt,
        K::InvalidInput | K::Value => Status::BadRequest,
        K::TooLarge => Status::TooLarge,
        K::Ended => Status::Expired,
        K::Forbidden => Status::Invalid,
        K::Unsupported => Status::Unsupported,
        _ => Status::Internal,
    };
    let what = match e.kind() {
        K::Unavailable => "store unavailable: ",
        K::Corrupt => "store returned a corrupt record: ",
        _ => "",
    };
    Reply::error(status, format!("{what}{e}"))
}

/// Handles one request.
pub(crate) async fn handle(state: &State, request: Request) -> Reply {
    match store_verb(state, request).await {
        Ok(reply) => reply,
        Err(e) => error_reply(&e),
    }
}

macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(error_reply(&e)),
        }
    };
}

async fn store_verb(state: &State, request: Request) -> Result<Reply, cloakroom::Error> {
    let store = &state.store;
    Ok(match request {
        Request::Ping => Reply::pong(env!("CARGO_PKG_VERSION")),
        Request::Create { record, now } => {
            let record = record_from_wire(record);
            let now = now.unwrap_or(record.last_seen);
            store.create(&record, now).await?;
            Reply::Done
        }
        Request::Load { id_hash, now } => {
            match store.load(&id_hash_from_wire(&id_hash), now).await? {
                Some(r) => Reply::Record(Box::new(record_to_wire(r))),
                None => Reply::error(Status::NotFound, "no live session with that id hash"),
            }
        }
        Request::Update { record, now } => {
            Reply::Version(store.update(&record_from_wire(record), now).await?)
        }
        Request::Apply {
            id_hash,
            changes,
            now,
            idle_deadline,
        } => {
            let applied = store
                .apply(
                    &id_hash_from_wire(&id_hash),
                    &changes_from_wire(changes),
                    now,
                    idle_deadline,
                )
                .await?;
            Reply::Applied {
                version: applied.version,
                idle_deadline: applied.idle_deadline,
            }
        }
        Request::Touch {
            id_hash,
            now,
            idle_deadline,
        } => {
            store
                .touch(&id_hash_from_wire(&id_hash), now, idle_deadline)
                .await?;
            Reply::Done
        }
        Request::Delete { id_hash } => {
            let hash = id_hash_from_wire(&id_hash);
            Reply::Deleted(end_session(state, &hash, None).await?)
        }
        Request::SessionsOf { user_id, now } => {
            let now = now.unwrap_or_else(|| state.clock.now());
            let records = store.sessions_of(&user_id, now).await?;
            Reply::Sessions(records.into_iter().map(record_to_wire).collect())
        }
        Request::RevokeUserSessions { user_id, except } => {
            let except = except.as_ref().map(id_hash_from_wire);
            let n = store
                .revoke_user_sessions(&user_id, except.as_ref())
                .await?;
            let epoch = store.user_epoch(&user_id).await.unwrap_or(0);
            revoked_user(state, user_id, epoch, except).await;
            Reply::Revoked(n)
        }
        Request::UserEpoch { user_id } => Reply::Epoch(store.user_epoch(&user_id).await?),
        Request::BumpUserEpoch { user_id } => {
            let epoch = store.bump_user_epoch(&user_id).await?;
            revoked_user(state, user_id, epoch, None).await;
            Reply::Epoch(epoch)
        }
        Request::PurgeExpired { now, limit } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let n = store.purge_expired(now, limit).await?;
            Reply::Purged(u64::try_from(n).unwrap_or(u64::MAX))
        }
        Request::FindPrefix { prefix, now } => {
            let now = now.unwrap_or_else(|| state.clock.now());
            let records = store.find_by_prefix(&prefix, now).await?;
            Reply::Sessions(records.into_iter().map(record_to_wire).collect())
        }
        Request::Stats { now } => {
            let now = now.unwrap_or_else(|| state.clock.now());
            let stats = store.stats(now).await?;
            Reply::Stats {
                live: stats.live,
                expired_not_purged: stats.expired_not_purged,
                bytes: stats.bytes,
            }
        }
        Request::EndSession { id_hash, user_id } => {
            let hash = id_hash_from_wire(&id_hash);
            Reply::Ended(ok!(end_session(state, &hash, user_id.as_deref()).await))
        }
        Request::RevokeUser { user_id } => {
            // As SessionManager::revoke_user (epoch first, so a racing login is caught), with
            // the new epoch kept for the reply and the feed.
            let epoch = store.bump_user_epoch(&user_id).await?;
            let n = store.revoke_user_sessions(&user_id, None).await?;
            revoked_user(state, user_id, epoch, None).await;
            Reply::UserRevoked { revoked: n, epoch }
        }
        other => crate::cookie_verbs::handle(state, other).await,
    })
}

/// Deletes one session (only if it belongs to `user`, when given) and announces it.
/// Returns whether one was deleted.
pub(crate) async fn end_session(
    state: &State,
    hash: &cloakroom::IdHash,
    user: Option<&str>,
) -> Result<bool, cloakroom::Error> {
    let now = state.clock.now();
    let loaded = match state.store.load(hash, now).await {
        Ok(r) => r,
        Err(e) if e.kind() == cloakroom::store::ErrorKind::Corrupt => None,
        Err(e) if user.is_some() => return Err(e.into()),
        // A plain DELETE deletes whatever is there, even what cannot be read.
        Err(_) => None,
    };
    if let Some(user) = user {
        if loaded.as_ref().and_then(|r| r.user_id.as_deref()) != Some(user) {
            return Ok(false);
        }
    }
    let deleted = state.store.delete(hash).await?;
    if deleted {
        let (user_id, epoch) = loaded.map_or((None, 0), |r| (r.user_id, r.user_epoch));
        ended(state, hash, user_id, epoch).await;
    }
    Ok(deleted)
}

/// Announces an ended session.
pub(crate) async fn ended(
    state: &State,
    hash: &cloakroom::IdHash,
    user_id: Option<String>,
    epoch: u64,
) {
    tracing::debug!(session = %hash, "session ended");
    state
        .feed
        .publish(FeedEvent::Session {
            id_hash: id_hash_to_wire(hash),
            user_id,
            epoch,
        })
        .await;
}

/// Announces a revoked user.
pub(crate) async fn revoked_user(
    state: &State,
    user_id: String,
    epoch: u64,
    except: Option<cloakroom::IdHash>,
) {
    state
        .feed
        .publish(FeedEvent::User {
            user_id,
            epoch,
            except: except.as_ref().map(id_hash_to_wire),
        })
        .await;
}
