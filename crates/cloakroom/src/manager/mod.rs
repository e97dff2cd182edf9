//! The session layer: loading a working copy from a cookie, committing it, and the verbs
//! that act on other sessions.
//!
//! This module holds the manager, its settings, the load and commit dispatchers and what
//! the modes share (minting cookies, building a new record, replacing one). Each mode's own
//! load and commit paths are in a module of their own: `server`, `client`, `hybrid`; the
//! verbs on other sessions are in `verbs`.

mod client;
mod hybrid;
mod outcome;
mod server;
mod verbs;

pub use outcome::{Commit, CookieUpdate, SessionInfo, SignedOut};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_token::{Codec, KeyRing, Opened};

use crate::csrf::{CsrfSecret, CSRF_SECRET_LEN};
use crate::error::{Error, ErrorKind};
use crate::id::{IdHash, SessionId};
use crate::policy::{Clock, Policy, SystemClock};
use crate::record::Record;
use crate::session::{remembered_in, AnonCsrf, Mode, Session, Verb};
use crate::store::{self, Store};

/// The default cookie name. The `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so a sibling subdomain cannot plant or overwrite it.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";

/// What the anonymous CSRF cookie's name adds to the session cookie's name: with the default
/// session cookie it is `__Host-session-csrf` (see [`SessionManager::csrf_cookie_name`]).
pub const CSRF_COOKIE_SUFFIX: &str = "-csrf";

/// The most a browser keeps of one cookie (name, `=` and value): RFC 6265 §6.1's minimum
/// that every browser honours. Client and hybrid modes refuse to go over it.
pub const MAX_COOKIE_LEN: usize = 4096;

/// How many cookie values of the session's name [`SessionManager::load_any`] tries.
pub const MAX_COOKIE_CANDIDATES: usize = 8;

/// The session layer: one per application, shared by every request.
///
/// Built from a key ring and a store (both required); the mode, policy, cookie name and
/// clock are optional `with_*` settings. A middleware calls
/// [`SessionManager::load_with_csrf`] with the request's session cookie and anonymous CSRF
/// cookie values, hands the [`Session`] to the handler, then calls
/// [`SessionManager::commit`] (or [`SessionManager::discard`] for a 5xx or a panic) and
/// applies the returned [`CookieUpdate`]s ([`Commit::cookie`](Commit#structfield.cookie) to the session cookie,
/// [`Commit::csrf_cookie`] to the CSRF cookie).
pub struct SessionManager {
    ring: KeyRing,
    codec: Codec,
    store: Arc<dyn Store>,
    mode: Mode,
    policy: Policy,
    clock: Arc<dyn Clock>,
    cookie_name: String,
    /// Signs the anonymous CSRF cookie, under its own purpose.
    csrf_codec: Codec,
    csrf_cookie_name: String,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            ring: _,
            codec,
            store: _,
            mode,
            policy,
            clock,
            cookie_name,
            csrf_codec,
            csrf_cookie_name,
        } = self;
        f.debug_struct("SessionManager")
            .field("codec", codec)
            .field("mode", mode)
            .field("policy", policy)
            .field("clock", clock)
            .field("cookie_name", cookie_name)
            .field("csrf_codec", csrf_codec)
            .field("csrf_cookie_name", csrf_cookie_name)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A server-mode session layer with the default policy, cookie name and system clock.
    ///
    /// # Errors
    /// [`ErrorKind::Token`] if the codec cannot be derived from the ring.
    pub fn new(ring: &KeyRing, store: Arc<dyn Store>) -> Result<Self, Error> {
        let (csrf_cookie_name, csrf_codec) = csrf_cookie(ring, DEFAULT_COOKIE_NAME)?;
        Ok(Self {
            ring: ring.clone(),
            codec: ring.codec(DEFAULT_COOKIE_NAME).map_err(Error::token)?,
            store,
            mode: Mode::Server,
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            csrf_codec,
            csrf_cookie_name,
        })
    }

    /// Sets the storage mode.
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the expiry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the clock (a [`ManualClock`](crate::ManualClock) in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the cookie name, which is also the tokens' purpose: a token minted for one
    /// cookie name never opens as another. The anonymous CSRF cookie is named after it
    /// (`<name>-csrf`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a name that is empty or not an RFC 6265 token.
    pub fn with_cookie_name(mut self, name: &str) -> Result<Self, Error> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !valid {
            return Err(Error::new(ErrorKind::InvalidInput, "invalid cookie name"));
        }
        self.codec = self.ring.codec(name).map_err(Error::token)?;
        (self.csrf_cookie_name, self.csrf_codec) = csrf_cookie(&self.ring, name)?;
        self.cookie_name = name.to_owned();
        Ok(self)
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The name of the anonymous CSRF cookie: the session cookie's name and
    /// [`CSRF_COOKIE_SUFFIX`] (`__Host-session-csrf` by default), so it keeps the session
    /// cookie's `__Host-` prefix. Pass its value to [`SessionManager::load_with_csrf`] and
    /// apply [`Commit::csrf_cookie`] to it.
    pub fn csrf_cookie_name(&self) -> &str {
        &self.csrf_cookie_name
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn template(&self, now: u64) -> Record {
        // A placeholder id hash: a new session gets its real id at commit.
        Record::new(IdHash::from_bytes([0; 32]), now, &self.policy)
    }

    fn fresh(&self, now: u64, stale_cookie: bool) -> Session {
        Session::new(self.mode, self.template(now), stale_cookie)
    }

    /// Opens the request's session from its cookie value (`None` without a cookie).
    ///
    /// A missing, forged, expired, revoked or corrupt session gives a new empty session
    /// (and the commit removes the stale cookie); a corrupt record is logged with its hash
    /// prefix and deleted.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store cannot be reached: answer 503, never carry on
    /// as anonymous.
    pub async fn load(&self, cookie: Option<&str>) -> Result<Session, Error> {
        self.load_with_csrf(cookie, None).await
    }

    /// [`SessionManager::load`] with the value of the anonymous CSRF cookie
    /// ([`SessionManager::csrf_cookie_name`]) too, which gives an anonymous visitor its CSRF
    /// secret without a stored session. A forged, expired or foreign CSRF cookie is ignored
    /// (and the commit removes it).
    ///
    /// # Errors
    /// As [`SessionManager::load`].
    pub async fn load_with_csrf(
        &self,
        cookie: Option<&str>,
        csrf_cookie: Option<&str>,
    ) -> Result<Session, Error> {
        self.load_any_with_csrf(cookie.as_slice(), csrf_cookie)
            .await
    }

    async fn open_session(&self, cookie: Option<&str>, now: u64) -> Result<Session, Error> {
        let Some(value) = cookie else {
            return Ok(self.fresh(now, false));
        };
        // Server mode takes only signed tokens, the others only sealed ones.
        let opened = match self.mode {
            Mode::Server => self.codec.verify(value, now),
            Mode::Client | Mode::Hybrid => self.codec.unseal(value, now),
        };
        let Ok(opened) = opened else {
            return Ok(self.fresh(now, true));
        };
        let mut session = self.open_payload(&opened, now).await?;
        session.reissue = session.stored && !opened.minted_with_primary();
        Ok(session)
    }

    /// Opens the request's session from several cookie values of the session's name, in
    /// the order given: the first that opens to a live session wins. A request carries
    /// several when a sibling subdomain planted a cookie of the same name next to the real
    /// one ("cookie tossing", possible for any name without the `__Host-` prefix); taking
    /// the first would let the planted one log the user out. At most
    /// [`MAX_COOKIE_CANDIDATES`] values are tried (each that verifies costs a store read).
    ///
    /// If none opens, the result is a new session whose commit removes the stale cookie,
    /// as [`SessionManager::load`] does for one bad value; an empty slice is a request
    /// without a cookie.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the store cannot be reached.
    pub async fn load_any(&self, cookies: &[&str]) -> Result<Session, Error> {
        self.load_any_with_csrf(cookies, None).await
    }

    /// [`SessionManager::load_any`] with the value of the anonymous CSRF cookie, as
    /// [`SessionManager::load_with_csrf`] takes it.
    ///
    /// # Errors
    /// As [`SessionManager::load_any`].
    pub async fn load_any_with_csrf(
        &self,
        cookies: &[&str],
        csrf_cookie: Option<&str>,
    ) -> Result<Session, Error> {
        let now = self.clock.now();
        let mut chosen = None;
        for value in cookies.iter().take(MAX_COOKIE_CANDIDATES) {
            let session = self.open_session(Some(value), now).await?;
            let stored = session.stored;
            chosen = Some(session);
            if stored {
                break;
            }
        }
        let mut session = match chosen {
            Some(session) => session,
            None => self.open_session(None, now).await?,
        };
        if let Some(value) = csrf_cookie {
            session.anon_csrf = self.open_anon_csrf(value, now);
        }
        Ok(session)
    }

    /// How long an anonymous CSRF cookie lives: the policy's absolute timeout.
    fn anon_csrf_lifetime(&self) -> u64 {
        self.policy.absolute().as_secs().max(2)
    }

    fn open_anon_csrf(&self, value: &str, now: u64) -> AnonCsrf {
        let mut anon = AnonCsrf {
            carried: true,
            ..AnonCsrf::default()
        };
        let Ok(opened) = self.csrf_codec.verify(value, now) else {
            return anon;
        };
        let Ok(bytes) = <[u8; CSRF_SECRET_LEN]>::try_from(opened.payload()) else {
            return anon;
        };
        anon.secret = Some(CsrfSecret::from_bytes(bytes));
        // Past half its life, or minted with a retired key: set it again when a page uses
        // it, so a form rendered now does not outlive its cookie.
        anon.stale = !opened.minted_with_primary()
            || now.saturating_sub(opened.issued_at()) >= self.anon_csrf_lifetime() / 2;
        anon
    }

    /// What the response does with the anonymous CSRF cookie.
    fn csrf_cookie_update(&self, session: &Session, now: u64) -> Result<CookieUpdate, Error> {
        let anon = &session.anon_csrf;
        if session.owns_csrf() {
            // The session's own secret rules: the anonymous cookie has done its work.
            return Ok(if anon.carried {
                CookieUpdate::Remove
            } else {
                CookieUpdate::Keep
            });
        }
        match &anon.secret {
            Some(secret) if anon.needs_set() => {
                let lifetime = self.anon_csrf_lifetime();
                let value = self
                    .csrf_codec
                    .sign(secret.expose(), now, now.saturating_add(lifetime))
                    .map_err(Error::token)?;
                Ok(CookieUpdate::Set {
                    value,
                    max_age: lifetime,
                })
            }
            Some(_) => Ok(CookieUpdate::Keep),
            // A forged, expired or foreign cookie.
            None if anon.carried => Ok(CookieUpdate::Remove),
            None => Ok(CookieUpdate::Keep),
        }
    }

    async fn open_payload(&self, opened: &Opened, now: u64) -> Result<Session, Error> {
        match self.mode {
            Mode::Server => self.open_server(opened, now).await,
            Mode::Client => self.open_client(opened, now).await,
            Mode::Hybrid => self.open_hybrid(opened, now).await,
        }
    }

    fn loaded(&self, id: SessionId, record: Record) -> Session {
        let mut session = Session::new(self.mode, record, false);
        session.id = Some(id.clone());
        session.loaded_id = Some(id);
        session.stored = true;
        session
    }

    async fn load_record(&self, id: &SessionId, now: u64) -> Result<Option<Record>, Error> {
        let hash = id.hash();
        match self.store.load(&hash, now).await {
            Ok(record) => Ok(record),
            Err(e) if e.kind() == store::ErrorKind::Corrupt => {
                tracing::warn!(session = %hash, error = %e, "corrupt session record; treating it as absent and deleting it");
                // Best effort: the session is absent either way.
                let _ = self.store.delete(&hash).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the working copy and writes nothing: for a 5xx response or a panic, so a
    /// half-done request never leaves a half-done session (the seed's PHP login that ran
    /// out of memory after setting the user).
    pub fn discard(&self, session: Session) {
        drop(session);
    }

    /// Writes the request's changes and says what to do with the cookie.
    ///
    /// - After [`Session::logout`]: the record is deleted and the cookie removed.
    /// - After [`Session::login`] or [`Session::cycle_id`]: a new record under a new id is
    ///   created, the old one deleted.
    /// - Otherwise the changed keys are applied to the *latest* stored version by the store
    ///   itself, atomically ([`Store::apply`]), so concurrent requests that change different
    ///   keys all keep their writes and none fails because another overlapped. A session
    ///   ended meanwhile is never brought back: the changes are dropped and
    ///   [`Commit::ended_concurrently`] is set.
    /// - With no changes, a write happens only when the idle deadline is due to slide
    ///   ([`Policy::needs_touch`]).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store; [`ErrorKind::TooLarge`] if a client- or hybrid-mode cookie would exceed
    /// [`MAX_COOKIE_LEN`]; [`ErrorKind::Ended`] if the user was revoked while a login in
    /// this request was being stored.
    pub async fn commit(&self, session: Session) -> Result<Commit, Error> {
        let now = self.clock.now();
        let csrf_cookie = self.csrf_cookie_update(&session, now)?;
        let mut commit = match self.mode {
            Mode::Server => self.commit_server(session, now).await,
            Mode::Client => self.commit_client(session, now).await,
            Mode::Hybrid => self.commit_hybrid(session, now).await,
        }?;
        commit.csrf_cookie = csrf_cookie;
        Ok(commit)
    }

    /// What a logout, login or cycle does first in the modes that keep a server record
    /// (server, hybrid): a logout deletes the loaded record and is done; a login or cycle
    /// moves the session to a new id (the one [`Session`] already minted, e.g. for a CSRF
    /// token, if it is not the loaded one).
    async fn rotate(&self, session: &Session) -> Result<Rotate, Error> {
        match &session.verb {
            Verb::Destroy => {
                if let Some(id) = &session.loaded_id {
                    self.store.delete(&id.hash()).await?;
                }
                Ok(Rotate::Done(Self::gone(session)))
            }
            Verb::Login { .. } | Verb::Cycle => Ok(Rotate::To(match &session.id {
                Some(id) if session.loaded_id.as_ref() != Some(id) => id.clone(),
                _ => SessionId::generate()?,
            })),
            Verb::None => Ok(Rotate::No),
        }
    }

    /// Slides the idle deadline of the stored record `hash` if it is due
    /// ([`Policy::needs_touch`]); a record gone meanwhile ends the session.
    async fn touch_if_due(
        &self,
        session: &Session,
        hash: &IdHash,
        now: u64,
    ) -> Result<Commit, Error> {
        if self.policy.needs_touch(&session.base, now) {
            let deadline = self
                .policy
                .idle_deadline(now, session.base.absolute_deadline);
            match self.store.touch(hash, now, deadline).await {
                Ok(()) => {}
                Err(e) if e.kind() == store::ErrorKind::NotFound => return Ok(Commit::ended()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Commit::cookie(CookieUpdate::Keep))
    }

    fn gone(session: &Session) -> Commit {
        if session.stale_cookie || session.stored {
            Commit::cookie(CookieUpdate::Remove)
        } else {
            Commit::cookie(CookieUpdate::Keep)
        }
    }

    fn max_age(record: &Record, now: u64) -> u64 {
        record.absolute_deadline.saturating_sub(now)
    }

    fn signed_cookie(&self, id: &SessionId, record: &Record, now: u64) -> Result<Commit, Error> {
        let value = self
            .codec
            .sign(id.expose(), now, record.absolute_deadline.max(now + 1))
            .map_err(Error::token)?;
        Ok(Commit::cookie(CookieUpdate::Set {
            value,
            max_age: Self::max_age(record, now),
        }))
    }

    fn sealed_cookie(&self, payload: &[u8], record: &Record, now: u64) -> Result<Commit, Error> {
        let value = self
            .codec
            .seal(payload, now, record.absolute_deadline.max(now + 1))
            .map_err(|e| {
                if e.kind() == cloakroom_token::ErrorKind::TooLarge {
                    too_large(payload.len(), None)
                } else {
                    Error::token(e)
                }
            })?;
        let len = self.cookie_name.len() + 1 + value.len();
        if len > MAX_COOKIE_LEN {
            return Err(too_large(payload.len(), Some(len)));
        }
        Ok(Commit::cookie(CookieUpdate::Set {
            value,
            max_age: Self::max_age(record, now),
        }))
    }

    /// Builds the record a login or cycle starts: a new id hash, the merged data, and for a
    /// login the user, the epoch, the device and fresh deadlines.
    async fn reborn(&self, session: &Session, hash: IdHash, now: u64) -> Result<Record, Error> {
        self.reborn_from(session, &session.base, hash, now).await
    }

    /// As [`Self::reborn`], applying the changes to `base` (a fresher read of the record).
    async fn reborn_from(
        &self,
        session: &Session,
        base: &Record,
        hash: IdHash,
        now: u64,
    ) -> Result<Record, Error> {
        let data = session.merged_onto(&base.data);
        match &session.verb {
            Verb::Login { user, device } => {
                let mut record = Record::new(hash, now, &self.policy);
                record.user_id = Some(user.clone());
                record.user_epoch = self.store.user_epoch(user).await?;
                record.device = device.clone();
                if let Some(asked) = remembered_in(&data) {
                    // "Remember me": its own lifetime, cut to the policy's bound, and no idle
                    // expiry before it.
                    let lifetime = self.policy.remember_lifetime(Duration::from_secs(asked));
                    record.absolute_deadline = now.saturating_add(lifetime.as_secs());
                    record.idle_deadline = record.absolute_deadline;
                }
                record.data = data;
                Ok(record)
            }
            _ => {
                let mut record = base.clone();
                if !session.stored {
                    record = self.template(now);
                }
                record.id_hash = hash;
                record.version = 1;
                record.last_seen = now;
                record.idle_deadline = self.policy.idle_deadline(now, record.absolute_deadline);
                if remembered_in(&data).is_some() {
                    record.idle_deadline = record.absolute_deadline;
                }
                record.data = data;
                if let Some(epoch) = session.new_epoch {
                    record.user_epoch = epoch;
                }
                Ok(record)
            }
        }
    }

    /// Stores a new server-side record for `id`, deletes the old one, and closes the race
    /// with a concurrent `revoke_user` (which bumps the epoch, then deletes): if the epoch
    /// moved after we read it, our new record may have escaped the delete, so we delete it.
    async fn create_replacing(
        &self,
        session: &Session,
        record: &Record,
        now: u64,
    ) -> Result<(), Error> {
        self.store.create(record, now).await?;
        if let Some(old) = &session.loaded_id {
            self.store.delete(&old.hash()).await?;
        }
        if let Some(user) = &record.user_id {
            if self.store.user_epoch(user).await? != record.user_epoch {
                self.store.delete(&record.id_hash).await?;
                return Err(Error::new(
                    ErrorKind::Ended,
                    "the user's sessions were revoked during login",
                ));
            }
        }
        Ok(())
    }
}

/// What [`SessionManager::rotate`] decided.
enum Rotate {
    /// A logout: its commit.
    Done(Commit),
    /// A login or cycle: the id the session moves to.
    To(SessionId),
    /// Neither: the session keeps its id.
    No,
}

/// The anonymous CSRF cookie's name for session cookie `name`, and its codec. The codec's
/// purpose (`csrf:<session cookie name>`) has a character no cookie name has, so a CSRF
/// cookie never opens as any session cookie, nor a session cookie as a CSRF cookie.
fn csrf_cookie(ring: &KeyRing, name: &str) -> Result<(String, Codec), Error> {
    let codec = ring.codec(&format!("csrf:{name}")).map_err(Error::token)?;
    Ok((format!("{name}{CSRF_COOKIE_SUFFIX}"), codec))
}

fn too_large(payload: usize, cookie: Option<usize>) -> Error {
    let size = cookie.map_or_else(
        || {
            format!(
                "a {payload}-byte session makes a token over {} bytes",
                cloakroom_token::MAX_TOKEN_LEN
            )
        },
        |c| format!("a {payload}-byte session makes a {c}-byte cookie"),
    );
    Error::new(
        ErrorKind::TooLarge,
        format!("{size}; browsers keep at most {MAX_COOKIE_LEN}: store less, or use server mode"),
    )
}
