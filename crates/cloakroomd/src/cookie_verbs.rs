//! The cookie verbs: a keyless application hands over the cookie value its visitor sent,
//! and the daemon's [`SessionManager`](cloakroom::SessionManager) does the rest.

use cloakroom::{CookieUpdate, Level, Session};
use cloakroom_proto::{Data, Flash, IssuedCookie, OpenedSession, Reply, Request, Secret, Status};

use cloakroom_stores::wire::{device_from_wire, id_hash_to_wire};

use crate::dispatch::{self, error_reply, Keys, State};

type Result<T> = std::result::Result<T, cloakroom::Error>;

fn invalid() -> Reply {
    Reply::error(Status::Invalid, "the cookie does not verify")
}

fn expired() -> Reply {
    Reply::error(Status::Expired, "the session has expired or was ended")
}

/// What a cookie value is.
enum Verified {
    /// It verifies; the session id's hash.
    Ok(cloakroom::IdHash),
    /// Authentic but past its expiry.
    Expired,
    /// Not a cookie of this key ring.
    Invalid,
}

fn verify(state: &State, keys: &Keys, cookie: &str) -> Verified {
    match keys.cookie_codec.verify(cookie, state.clock.now()) {
        Ok(opened) => match cloakroom::SessionId::from_bytes(opened.payload()) {
            Ok(id) => Verified::Ok(id.hash()),
            Err(_) => Verified::Invalid,
        },
        Err(e) if e.kind() == cloakroom_token::ErrorKind::Expired => Verified::Expired,
        Err(_) => Verified::Invalid,
    }
}

/// An anonymous CSRF cookie for session `hash`, so a stored session without a user (which
/// has no CSRF secret of its own) gets a stable one: derived from the key ring and the id
/// hash, handed to the manager the way a browser's CSRF cookie would be.
fn csrf_cookie(state: &State, keys: &Keys, hash: &cloakroom::IdHash) -> Option<String> {
    let secret = cloakroom_token::hmac_sha256(&keys.csrf_key[..], hash.as_bytes());
    let now = state.clock.now();
    keys.csrf_codec
        .sign(&secret, now, now.saturating_add(3600))
        .ok()
}

/// Opens the live session of a cookie value, or the reply that says why not.
async fn open(
    state: &State,
    keys: &Keys,
    cookie: &Secret,
    with_csrf: bool,
) -> Result<std::result::Result<Session, Reply>> {
    let hash = match verify(state, keys, cookie.expose()) {
        Verified::Ok(hash) => hash,
        Verified::Expired => return Ok(Err(expired())),
        Verified::Invalid => return Ok(Err(invalid())),
    };
    let csrf = if with_csrf {
        csrf_cookie(state, keys, &hash)
    } else {
        None
    };
    let session = keys
        .sessions
        .load_with_csrf(Some(cookie.expose()), csrf.as_deref())
        .await?;
    if session.is_new() {
        return Ok(Err(expired()));
    }
    Ok(Ok(session))
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Success => "success",
        Level::Warning => "warning",
        _ => "error",
    }
}

fn parse_level(name: &str) -> Option<Level> {
    Some(match name {
        "debug" => Level::Debug,
        "info" => Level::Info,
        "success" => Level::Success,
        "warning" => Level::Warning,
        "error" => Level::Error,
        _ => return None,
    })
}

fn new_cookie(update: CookieUpdate) -> Option<Secret> {
    match update {
        CookieUpdate::Set { value, .. } => Some(Secret::new(value)),
        _ => None,
    }
}

/// The cookie and the time it dies if idle, of a session a commit just created.
fn issued(keys: &Keys, now: u64, update: CookieUpdate, hash: Option<cloakroom::IdHash>) -> Reply {
    match (update, hash) {
        (CookieUpdate::Set { value, max_age }, Some(hash)) => {
            let absolute = now.saturating_add(max_age);
            let expires_at = keys.sessions.policy().idle_deadline(now, absolute);
            Reply::Issued(IssuedCookie::new(
                Secret::new(value),
                id_hash_to_wire(&hash),
                expires_at,
            ))
        }
        _ => Reply::error(Status::Internal, "the session was not created"),
    }
}

/// Handles a cookie verb.
pub(crate) async fn handle(state: &State, request: Request) -> Reply {
    match cookie_verb(state, request).await {
        Ok(reply) => reply,
        Err(e) => error_reply(&e),
    }
}

macro_rules! opened {
    ($e:expr) => {
        match $e? {
            Ok(session) => session,
            Err(reply) => return Ok(reply),
        }
    };
}

async fn cookie_verb(state: &State, request: Request) -> Result<Reply> {
    let keys = state.keys();
    let keys = &*keys;
    let now = state.clock.now();
    Ok(match request {
        Request::Open {
            cookie,
            take_flashes,
        } => {
            let mut s = opened!(open(state, keys, &cookie, true).await);
            let flashes = if take_flashes {
                s.take_flashes()
            } else {
                s.peek_flashes()
            };
            let csrf = s.csrf_token()?;
            let data: Data = s
                .keys()
                .into_iter()
                .filter_map(|k| s.get_value(k).map(|v| (k.to_owned(), v.clone())))
                .collect();
            let Some(hash) = s.id_hash() else {
                return Ok(Reply::error(Status::Internal, "a stored session has no id"));
            };
            let user_id = s.user_id().map(str::to_owned);
            let expires_at = s.expires_at();
            let commit = keys.sessions.commit(s).await?;
            if commit.ended_concurrently {
                return Ok(expired());
            }
            let mut opened =
                OpenedSession::new(id_hash_to_wire(&hash), Secret::new(csrf), expires_at);
            opened.user_id = user_id;
            opened.data = data;
            opened.flashes = flashes
                .into_iter()
                .map(|f| Flash::new(level_name(f.level), f.message))
                .collect();
            opened.cookie = new_cookie(commit.cookie);
            Reply::Opened(Box::new(opened))
        }
        Request::Issue {
            user_id,
            data,
            device,
        } => {
            let mut s = keys.sessions.load(None).await?;
            for (k, v) in data {
                s.insert_value(&k, v)?;
            }
            match user_id {
                Some(user) => s.login(user, device_from_wire(device))?,
                // A session even with nothing in it: a new id makes the commit store it.
                None => s.cycle_id()?,
            }
            let hash = s.id_hash();
            let commit = keys.sessions.commit(s).await?;
            issued(keys, now, commit.cookie, hash)
        }
        Request::Login {
            cookie,
            user_id,
            device,
        } => {
            let mut s = match &cookie {
                Some(c) => match verify(state, keys, c.expose()) {
                    Verified::Invalid => return Ok(invalid()),
                    // An expired or ended session: the login starts a new one.
                    _ => keys.sessions.load(Some(c.expose())).await?,
                },
                None => keys.sessions.load(None).await?,
            };
            let old = if s.is_new() {
                None
            } else {
                s.id_hash().map(|h| (h, s.user_id().map(str::to_owned)))
            };
            s.login(user_id, device_from_wire(device))?;
            let hash = s.id_hash();
            let commit = keys.sessions.commit(s).await?;
            if let Some((old_hash, old_user)) = old {
                let epoch = match &old_user {
                    Some(u) => state.store.user_epoch(u).await.unwrap_or(0),
                    None => 0,
                };
                dispatch::ended(state, &old_hash, old_user, epoch).await;
            }
            issued(keys, now, commit.cookie, hash)
        }
        Request::Logout { cookie } => {
            let hash = match verify(state, keys, cookie.expose()) {
                Verified::Invalid => return Ok(invalid()),
                Verified::Expired => return Ok(Reply::Ended(false)),
                Verified::Ok(hash) => hash,
            };
            let mut s = keys.sessions.load(Some(cookie.expose())).await?;
            if s.is_new() {
                return Ok(Reply::Ended(false));
            }
            let user = s.user_id().map(str::to_owned);
            s.logout();
            keys.sessions.commit(s).await?;
            let epoch = match &user {
                Some(u) => state.store.user_epoch(u).await.unwrap_or(0),
                None => 0,
            };
            dispatch::ended(state, &hash, user, epoch).await;
            Reply::Ended(true)
        }
        Request::Set { cookie, changes } => {
            change(state, keys, cookie.as_ref(), |s| {
                for c in changes {
                    match c {
                        cloakroom_proto::Change::Set(k, v) => s.insert_value(&k, v)?,
                        cloakroom_proto::Change::Remove(k) => {
                            s.remove(&k)?;
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
            .await?
        }
        Request::Remove {
            cookie,
            keys: names,
        } => {
            change(state, keys, Some(&cookie), |s| {
                for k in names {
                    s.remove(&k)?;
                }
                Ok(())
            })
            .await?
        }
        Request::Flash {
            cookie,
            level,
            message,
        } => {
            let Some(level) = parse_level(&level) else {
                return Ok(Reply::error(
                    Status::BadRequest,
                    "FLASH: level is one of debug, info, success, warning, error",
                ));
            };
            change(state, keys, cookie.as_ref(), |s| {
                s.flash(level, message);
                Ok(())
            })
            .await?
        }
        Request::Csrf { cookie, verify } => {
            let mut s = opened!(open(state, keys, &cookie, true).await);
            match verify {
                Some(token) => Reply::CsrfValid(s.verify_csrf(token.expose())),
                None => {
                    let token = s.csrf_token()?;
                    if s.has_changes() {
                        // A logged-in session without a secret was given one: keep it.
                        let commit = keys.sessions.commit(s).await?;
                        if commit.ended_concurrently {
                            return Ok(expired());
                        }
                    }
                    Reply::CsrfToken(Secret::new(token))
                }
            }
        }
        Request::SignOutOthers { cookie } => {
            let s = opened!(open(state, keys, &cookie, false).await);
            let (Some(user), Some(hash)) = (s.user_id().map(str::to_owned), s.id_hash()) else {
                return Ok(Reply::Revoked(0));
            };
            let done = keys.sessions.sign_out_others_of(&user, Some(&hash)).await?;
            let epoch = state.store.user_epoch(&user).await.unwrap_or(0);
            dispatch::revoked_user(state, user, epoch, Some(hash)).await;
            Reply::Revoked(done.ended())
        }
        _ => Reply::error(Status::Internal, "verb not dispatched"),
    })
}

/// SET, REMOVE and FLASH: change the cookie's session (or a new one without a cookie) and
/// commit; the store merges the changed keys atomically.
async fn change(
    state: &State,
    keys: &Keys,
    cookie: Option<&Secret>,
    f: impl FnOnce(&mut Session) -> Result<()>,
) -> Result<Reply> {
    let mut s = match cookie {
        Some(c) => opened!(open(state, keys, c, false).await),
        None => keys.sessions.load(None).await?,
    };
    f(&mut s)?;
    let commit = keys.sessions.commit(s).await?;
    if commit.ended_concurrently {
        return Ok(expired());
    }
    Ok(Reply::Cookie(new_cookie(commit.cookie)))
}
