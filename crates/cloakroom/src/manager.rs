//! The session layer: loading a working copy from a cookie, committing it, and the verbs
//! that act on other sessions.

use std::fmt;
use std::sync::Arc;

use cloakroom_token::{Codec, KeyRing, Opened};

use crate::error::{Error, ErrorKind};
use crate::id::{IdHash, SessionId, SESSION_ID_LEN};
use crate::policy::{Clock, Policy, SystemClock};
use crate::record::{Device, Record};
use crate::session::{Mode, Session, Verb};
use crate::store::{Changes, Store};

/// The default cookie name. The `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so a sibling subdomain cannot plant or overwrite it.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";

/// The most a browser keeps of one cookie (name, `=` and value): RFC 6265 §6.1's minimum
/// that every browser honours. Client and hybrid modes refuse to go over it.
pub const MAX_COOKIE_LEN: usize = 4096;

/// What the response must do with the session cookie after a commit.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieUpdate {
    /// Nothing: the browser's cookie is still right (or there is none and none is needed).
    Keep,
    /// Set the cookie to `value` for `max_age` seconds.
    Set {
        /// The cookie value (a token; a bearer secret, never log it).
        value: String,
        /// Seconds until the session's absolute deadline.
        max_age: u64,
    },
    /// Remove the cookie (`Max-Age=0`).
    Remove,
}

impl CookieUpdate {
    /// The `Set-Cookie` header value for cookie `name` with the defaults of DESIGN.md §8
    /// (`Path=/; Secure; HttpOnly; SameSite=Lax`), or `None` for [`CookieUpdate::Keep`].
    pub fn set_cookie_header(&self, name: &str) -> Option<String> {
        match self {
            Self::Keep => None,
            Self::Set { value, max_age } => Some(format!(
                "{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"
            )),
            Self::Remove => Some(format!(
                "{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
            )),
        }
    }
}

impl fmt::Debug for CookieUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keep => f.write_str("Keep"),
            Self::Set { value, max_age } => f
                .debug_struct("Set")
                .field("value_len", &value.len())
                .field("max_age", max_age)
                .finish(),
            Self::Remove => f.write_str("Remove"),
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Commit {
    /// What to do with the cookie.
    pub cookie: CookieUpdate,
    /// The session was ended (logged out, revoked, expired) by someone else while this
    /// request ran: its changes were dropped and the cookie is removed.
    pub ended_concurrently: bool,
}

impl Commit {
    fn cookie(cookie: CookieUpdate) -> Self {
        Self {
            cookie,
            ended_concurrently: false,
        }
    }

    fn ended() -> Self {
        Self {
            cookie: CookieUpdate::Remove,
            ended_concurrently: true,
        }
    }
}

/// One session for a "your devices" page. Holds no data and no id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The id's hash: compare with [`Session::id_hash`] to mark the current session, and
    /// pass to [`SessionManager::end_session`] to end this one.
    pub id_hash: IdHash,
    /// When it was created (logged in).
    pub created: u64,
    /// When it was last written or touched.
    pub last_seen: u64,
    /// When it ends if idle.
    pub idle_deadline: u64,
    /// When it ends regardless.
    pub absolute_deadline: u64,
    /// What the application recorded about the device.
    pub device: Device,
}

/// The session layer: one per application, shared by every request.
///
/// Built from a key ring and a store (both required); the mode, policy, cookie name and
/// clock are optional `with_*` settings. A middleware calls [`SessionManager::load`] with
/// the request's cookie value, hands the [`Session`] to the handler, then calls
/// [`SessionManager::commit`] (or [`SessionManager::discard`] for a 5xx or a panic) and
/// applies the returned [`CookieUpdate`].
pub struct SessionManager {
    ring: KeyRing,
    codec: Codec,
    store: Arc<dyn Store>,
    mode: Mode,
    policy: Policy,
    clock: Arc<dyn Clock>,
    cookie_name: String,
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
        } = self;
        f.debug_struct("SessionManager")
            .field("codec", codec)
            .field("mode", mode)
            .field("policy", policy)
            .field("clock", clock)
            .field("cookie_name", cookie_name)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A server-mode session layer with the default policy, cookie name and system clock.
    ///
    /// # Errors
    /// [`ErrorKind::Token`] if the codec cannot be derived from the ring.
    pub fn new(ring: &KeyRing, store: Arc<dyn Store>) -> Result<Self, Error> {
        Ok(Self {
            ring: ring.clone(),
            codec: ring.codec(DEFAULT_COOKIE_NAME).map_err(Error::token)?,
            store,
            mode: Mode::Server,
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
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
    /// cookie name never opens as another.
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
        self.cookie_name = name.to_owned();
        Ok(self)
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
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
        let now = self.clock.now();
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

    async fn open_payload(&self, opened: &Opened, now: u64) -> Result<Session, Error> {
        match self.mode {
            Mode::Server => {
                let Ok(id) = SessionId::from_bytes(opened.payload()) else {
                    return Ok(self.fresh(now, true));
                };
                match self.load_record(&id, now).await? {
                    Some(record) => Ok(self.loaded(id, record)),
                    None => Ok(self.fresh(now, true)),
                }
            }
            Mode::Client => {
                let Ok(record) = Record::decode(opened.payload()) else {
                    return Ok(self.fresh(now, true));
                };
                if !record.is_live(now) {
                    return Ok(self.fresh(now, true));
                }
                if let Some(user) = &record.user_id {
                    if self.store.user_epoch(user).await? != record.user_epoch {
                        return Ok(self.fresh(now, true));
                    }
                }
                let mut session = Session::new(self.mode, record, false);
                session.stored = true;
                Ok(session)
            }
            Mode::Hybrid => {
                let payload = opened.payload();
                if payload.len() < SESSION_ID_LEN {
                    return Ok(self.fresh(now, true));
                }
                let (id, rest) = payload.split_at(SESSION_ID_LEN);
                let (Ok(id), Ok(data)) = (SessionId::from_bytes(id), Record::decode(rest)) else {
                    return Ok(self.fresh(now, true));
                };
                let Some(mut record) = self.load_record(&id, now).await? else {
                    return Ok(self.fresh(now, true));
                };
                if record.user_id != data.user_id || record.user_epoch != data.user_epoch {
                    return Ok(self.fresh(now, true));
                }
                // The server record is the authority on liveness; the cookie on data.
                record.data = data.data;
                Ok(self.loaded(id, record))
            }
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
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::warn!(session = %hash, error = %e, "corrupt session record; treating it as absent and deleting it");
                // Best effort: the session is absent either way.
                let _ = self.store.delete(&hash).await;
                Ok(None)
            }
            Err(e) => Err(e),
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
        match self.mode {
            Mode::Server => self.commit_server(session, now).await,
            Mode::Client => self.commit_client(session, now).await,
            Mode::Hybrid => self.commit_hybrid(session, now).await,
        }
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
    async fn create_replacing(&self, session: &Session, record: &Record) -> Result<(), Error> {
        self.store.create(record).await?;
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

    async fn commit_server(&self, session: Session, now: u64) -> Result<Commit, Error> {
        match &session.verb {
            Verb::Destroy => {
                if let Some(id) = &session.loaded_id {
                    self.store.delete(&id.hash()).await?;
                }
                return Ok(Self::gone(&session));
            }
            Verb::Login { .. } | Verb::Cycle => {
                let id = match &session.id {
                    Some(id) if session.loaded_id.as_ref() != Some(id) => id.clone(),
                    _ => SessionId::generate()?,
                };
                let record = match (&session.verb, &session.loaded_id) {
                    // A cycle keeps the session: start from its latest version, and never
                    // bring back one that was ended meanwhile.
                    (Verb::Cycle, Some(old)) => match self.load_record(old, now).await? {
                        Some(latest) => self.reborn_from(&session, &latest, id.hash(), now).await?,
                        None => return Ok(Commit::ended()),
                    },
                    _ => self.reborn(&session, id.hash(), now).await?,
                };
                self.create_replacing(&session, &record).await?;
                return self.signed_cookie(&id, &record, now);
            }
            Verb::None => {}
        }
        let Some(id) = session.loaded_id.clone() else {
            if session.changes.is_empty() {
                return Ok(Self::gone(&session));
            }
            // A new session with something worth keeping.
            let id = SessionId::generate()?;
            let record = self.reborn(&session, id.hash(), now).await?;
            self.store.create(&record).await?;
            return self.signed_cookie(&id, &record, now);
        };
        let done = if session.changes.is_empty() {
            self.touch_if_due(&session, &id.hash(), now).await?
        } else {
            self.apply_changes(&session, &id, now).await?
        };
        if session.reissue && !done.ended_concurrently {
            return self.signed_cookie(&id, &session.base, now);
        }
        Ok(done)
    }

    /// Applies the session's changed keys to the latest stored version of `id` with one
    /// [`Store::apply`]: the store merges them atomically, so a request never fails because
    /// another request of the same session overlapped, and a session ended meanwhile is
    /// reported, never written back.
    async fn apply_changes(
        &self,
        session: &Session,
        id: &SessionId,
        now: u64,
    ) -> Result<Commit, Error> {
        let changes: Changes = session
            .changes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let hash = id.hash();
        let idle_deadline = self
            .policy
            .idle_deadline(now, session.base.absolute_deadline);
        match self.store.apply(&hash, &changes, now, idle_deadline).await {
            Ok(_) => Ok(Commit::cookie(CookieUpdate::Keep)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Commit::ended()),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                // As on load: a record that does not decode is absent; delete it.
                tracing::warn!(session = %hash, error = %e, "corrupt session record at commit; treating it as ended and deleting it");
                let _ = self.store.delete(&hash).await;
                Ok(Commit::ended())
            }
            Err(e) => Err(e),
        }
    }

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
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Commit::ended()),
                Err(e) => return Err(e),
            }
        }
        Ok(Commit::cookie(CookieUpdate::Keep))
    }

    async fn commit_client(&self, session: Session, now: u64) -> Result<Commit, Error> {
        let record = match &session.verb {
            Verb::Destroy => return Ok(Self::gone(&session)),
            Verb::Login { .. } | Verb::Cycle => {
                // No server-side id: a random hash stands in as the session's name in logs.
                let placeholder = SessionId::generate()?.hash();
                self.reborn(&session, placeholder, now).await?
            }
            Verb::None => {
                let due = session.stored
                    && (session.reissue || self.policy.needs_touch(&session.base, now));
                if session.changes.is_empty() && session.new_epoch.is_none() && !due {
                    return Ok(if session.stored {
                        Commit::cookie(CookieUpdate::Keep)
                    } else {
                        Self::gone(&session)
                    });
                }
                let hash = if session.stored {
                    session.base.id_hash
                } else {
                    SessionId::generate()?.hash()
                };
                self.reborn(&session, hash, now).await?
            }
        };
        // No race with `revoke_user` to close here: a cookie minted with an epoch that was
        // bumped meanwhile dies on its next load.
        let payload = record.encode()?;
        self.sealed_cookie(&payload, &record, now)
    }

    async fn commit_hybrid(&self, session: Session, now: u64) -> Result<Commit, Error> {
        let (id, record) = match &session.verb {
            Verb::Destroy => {
                if let Some(id) = &session.loaded_id {
                    self.store.delete(&id.hash()).await?;
                }
                return Ok(Self::gone(&session));
            }
            Verb::Login { .. } | Verb::Cycle => {
                let id = match &session.id {
                    Some(id) if session.loaded_id.as_ref() != Some(id) => id.clone(),
                    _ => SessionId::generate()?,
                };
                let record = self.reborn(&session, id.hash(), now).await?;
                let mut server = record.clone();
                server.data.clear();
                self.create_replacing(&session, &server).await?;
                (id, record)
            }
            Verb::None => match session.loaded_id.clone() {
                None => {
                    if session.changes.is_empty() {
                        return Ok(Self::gone(&session));
                    }
                    let id = SessionId::generate()?;
                    let record = self.reborn(&session, id.hash(), now).await?;
                    let mut server = record.clone();
                    server.data.clear();
                    self.store.create(&server).await?;
                    (id, record)
                }
                Some(id) => {
                    let touched = self.touch_if_due(&session, &id.hash(), now).await?;
                    if touched.ended_concurrently {
                        return Ok(touched);
                    }
                    if session.changes.is_empty() && !session.reissue {
                        return Ok(touched);
                    }
                    let mut record = session.base.clone();
                    record.data = session.merged_onto(&session.base.data);
                    (id, record)
                }
            },
        };
        let mut cookie_record = record;
        cookie_record.version = 0;
        let mut payload = Vec::with_capacity(SESSION_ID_LEN + 256);
        payload.extend_from_slice(id.expose());
        payload.extend_from_slice(&cookie_record.encode()?);
        let result = self.sealed_cookie(&payload, &cookie_record, now);
        let created = session.verb != Verb::None || session.loaded_id.is_none();
        if result.is_err() && created {
            // The cookie cannot be issued: do not leave a server record nobody can use.
            let _ = self.store.delete(&id.hash()).await;
        }
        result
    }

    // ---- verbs on other sessions ----

    /// Ends every session of the session's user except this one ("sign out everywhere
    /// else") and returns how many were ended. In client mode it bumps the user's epoch
    /// (ending all their cookies) and gives this session the new epoch at commit, so the
    /// count is unknown and reported as 0. Does nothing for an anonymous session.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn sign_out_other_sessions(&self, session: &mut Session) -> Result<u64, Error> {
        let Some(user) = session.user_id().map(str::to_owned) else {
            return Ok(0);
        };
        match self.mode {
            Mode::Server | Mode::Hybrid => {
                let current = session.id_hash();
                self.store
                    .revoke_user_sessions(&user, current.as_ref())
                    .await
            }
            Mode::Client => {
                let epoch = self.store.bump_user_epoch(&user).await?;
                // A login in this request reads the epoch at commit, after this bump.
                session.new_epoch = Some(epoch);
                Ok(0)
            }
        }
    }

    /// Ends every session of `user` (password change, account lock): bumps the user's epoch,
    /// so client-mode cookies die too, then deletes the user's records. Returns how many
    /// records were deleted.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn revoke_user(&self, user: &str) -> Result<u64, Error> {
        // Bump first: a login racing this either sees the new epoch or is deleted below
        // (see `create_replacing`).
        self.store.bump_user_epoch(user).await?;
        self.store.revoke_user_sessions(user, None).await
    }

    /// The live sessions of `user`, oldest first, for a "your devices" page.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] in client mode, which keeps no list;
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, Error> {
        if self.mode == Mode::Client {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "client mode keeps no list of sessions",
            ));
        }
        let now = self.clock.now();
        let mut out: Vec<SessionInfo> = self
            .store
            .sessions_of(user, now)
            .await?
            .into_iter()
            .map(|r| SessionInfo {
                id_hash: r.id_hash,
                created: r.created,
                last_seen: r.last_seen,
                idle_deadline: r.idle_deadline,
                absolute_deadline: r.absolute_deadline,
                device: r.device,
            })
            .collect();
        out.sort_by_key(|s| (s.created, s.id_hash));
        Ok(out)
    }

    /// Ends one session of `user` from a "your devices" page. Returns false if it was not
    /// theirs or is already gone.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn end_session(&self, user: &str, id_hash: &IdHash) -> Result<bool, Error> {
        let now = self.clock.now();
        match self.store.load(id_hash, now).await {
            Ok(Some(r)) if r.user_id.as_deref() == Some(user) => self.store.delete(id_hash).await,
            Ok(_) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Corrupt => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes expired records in batches of `batch` until none are left; returns the total.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] from the store.
    pub async fn purge_expired(&self, batch: usize) -> Result<usize, Error> {
        let now = self.clock.now();
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.store.purge_expired(now, batch).await?;
            total += n;
            if n < batch {
                return Ok(total);
            }
        }
    }
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
