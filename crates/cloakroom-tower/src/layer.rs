//! The session layer: its builder, the service it wraps handlers in, and the per-request slot
//! the extractors share.

use std::convert::Infallible;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::FutureExt;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

use cloakroom::{
    Clock, CookieUpdate, KeyRing, Mode, Policy, SessionManager, Store, SystemClock,
    DEFAULT_COOKIE_NAME, MAX_COOKIE_LEN,
};

use crate::error::{status_response, Error, ErrorKind};
#[cfg(feature = "migrate")]
use crate::migrate::LegacyMigration;
use crate::user::{LoaderHandle, UserLoader};

/// The cookie name used with [`Builder::insecure_plain_http_for_local_development`]:
/// browsers refuse a `__Host-` cookie without `Secure`.
pub const PLAIN_HTTP_COOKIE_NAME: &str = "cloakroom-session";

/// A builder that still needs its key ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeedsKeyRing;

/// A builder that still needs its store.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeedsStore;

type Inserter = Arc<dyn Fn(&mut http::Extensions) + Send + Sync>;

/// Builds a [`SessionLayer`]. [`Builder::build`] exists only once both the key ring and the
/// store are given: a session layer without keys or without a store does not compile.
///
/// ```compile_fail
/// // No store: there is no `build` to call.
/// let ring = cloakroom::KeyRing::generate().unwrap();
/// let layer = cloakroom_tower::SessionLayer::builder().key_ring(&ring).build();
/// ```
pub struct Builder<K, S> {
    ring: K,
    store: S,
    mode: Mode,
    policy: Option<Policy>,
    clock: Option<Arc<dyn Clock>>,
    cookie_name: Option<String>,
    plain_http: bool,
    inserters: Vec<Inserter>,
    #[cfg(feature = "migrate")]
    migration: Option<LegacyMigration>,
}

impl<K, S> fmt::Debug for Builder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            ring: _,
            store: _,
            mode,
            policy,
            clock: _,
            cookie_name,
            plain_http,
            inserters,
            #[cfg(feature = "migrate")]
            migration,
        } = self;
        let mut f = f.debug_struct("Builder");
        f.field("mode", mode)
            .field("policy", policy)
            .field("cookie_name", cookie_name)
            .field("plain_http", plain_http)
            .field("user_loaders", &inserters.len());
        #[cfg(feature = "migrate")]
        f.field("migration", migration);
        f.finish_non_exhaustive()
    }
}

impl<S> Builder<NeedsKeyRing, S> {
    /// The key ring that signs (server mode) or seals (client and hybrid) the cookies.
    pub fn key_ring(self, ring: &KeyRing) -> Builder<KeyRing, S> {
        Builder {
            ring: ring.clone(),
            store: self.store,
            mode: self.mode,
            policy: self.policy,
            clock: self.clock,
            cookie_name: self.cookie_name,
            plain_http: self.plain_http,
            inserters: self.inserters,
            #[cfg(feature = "migrate")]
            migration: self.migration,
        }
    }
}

impl<K> Builder<K, NeedsStore> {
    /// The store that keeps the records (server and hybrid modes) and users' epochs (every
    /// mode).
    pub fn store(self, store: Arc<dyn Store>) -> Builder<K, Arc<dyn Store>> {
        Builder {
            ring: self.ring,
            store,
            mode: self.mode,
            policy: self.policy,
            clock: self.clock,
            cookie_name: self.cookie_name,
            plain_http: self.plain_http,
            inserters: self.inserters,
            #[cfg(feature = "migrate")]
            migration: self.migration,
        }
    }
}

impl<K, S> Builder<K, S> {
    /// The storage mode (default [`Mode::Server`]).
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The expiry policy (default: 30 minutes idle, 12 hours absolute).
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The cookie name (default `__Host-session`).
    #[must_use]
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    /// Serves the cookie without `Secure`, for development on `http://127.0.0.1`. The cookie
    /// is then named [`PLAIN_HTTP_COOKIE_NAME`] unless named otherwise (a `__Host-` cookie
    /// needs `Secure`). Never use this where the traffic leaves the machine: the cookie is a
    /// bearer secret. A warning is logged when the layer is built.
    #[must_use]
    pub fn insecure_plain_http_for_local_development(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Adds the loader `CurrentUser<L::User>` asks on every request.
    #[must_use]
    pub fn with_user_loader<L: UserLoader>(mut self, loader: L) -> Self {
        let handle = LoaderHandle::<L::User>::new(loader);
        self.inserters
            .push(Arc::new(move |ext: &mut http::Extensions| {
                ext.insert(handle.clone());
            }));
        self
    }

    /// Accepts another framework's session cookie once and answers with a Cloakroom login
    /// (feature `migrate`); see [`LegacyMigration`].
    #[cfg(feature = "migrate")]
    #[must_use]
    pub fn with_legacy_migration(mut self, migration: LegacyMigration) -> Self {
        self.migration = Some(migration);
        self
    }
}

impl Builder<KeyRing, Arc<dyn Store>> {
    /// The layer.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] for an invalid cookie name (not an RFC 6265 token, or a
    /// `__Host-`/`__Secure-` name with plain http) or a key ring the codec cannot use.
    pub fn build(self) -> Result<SessionLayer, Error> {
        let name = match (&self.cookie_name, self.plain_http) {
            (Some(name), _) => name.clone(),
            (None, false) => DEFAULT_COOKIE_NAME.to_owned(),
            (None, true) => PLAIN_HTTP_COOKIE_NAME.to_owned(),
        };
        if self.plain_http && (name.starts_with("__Host-") || name.starts_with("__Secure-")) {
            return Err(cloakroom::Error::new(
                cloakroom::ErrorKind::InvalidInput,
                "a __Host- or __Secure- cookie needs Secure, which plain http cannot have",
            )
            .into());
        }
        #[cfg(feature = "migrate")]
        if let Some(migration) = &self.migration {
            if migration.cookie_name() == name {
                return Err(cloakroom::Error::new(
                    cloakroom::ErrorKind::InvalidInput,
                    "the legacy session cookie and the Cloakroom cookie have the same name",
                )
                .into());
            }
        }
        if self.plain_http {
            tracing::warn!(
                cookie = %name,
                "session cookie without Secure (plain http for local development): never serve this beyond the machine"
            );
        }
        let mut manager = SessionManager::new(&self.ring, self.store)?
            .with_mode(self.mode)
            .with_cookie_name(&name)?;
        if let Some(policy) = self.policy {
            manager = manager.with_policy(policy);
        }
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        manager = manager.with_clock(clock.clone());
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                manager,
                secure: !self.plain_http,
                inserters: self.inserters,
                clock,
                #[cfg(feature = "migrate")]
                migration: self.migration,
            }),
        })
    }
}

pub(crate) struct Shared {
    pub(crate) manager: SessionManager,
    secure: bool,
    inserters: Vec<Inserter>,
    #[cfg_attr(not(feature = "migrate"), allow(dead_code))]
    clock: Arc<dyn Clock>,
    #[cfg(feature = "migrate")]
    migration: Option<LegacyMigration>,
}

impl Shared {
    fn set_cookie(&self, update: &CookieUpdate) -> Option<String> {
        self.cookie_line(self.manager.cookie_name(), update)
    }

    /// The `Set-Cookie` line for cookie `name` with the session cookie's attributes (the
    /// anonymous CSRF cookie uses it too).
    fn cookie_line(&self, name: &str, update: &CookieUpdate) -> Option<String> {
        let header = update.set_cookie_header(name)?;
        Some(if self.secure {
            header
        } else {
            header.replace("; Secure", "")
        })
    }
}

/// Cloakroom sessions for an axum [`Router`](axum::Router) or any tower service of
/// `Request<Body>`.
///
/// Per request it loads the session from the cookie (a store that is down answers 503 with
/// `Retry-After`, before the handler runs), hands it to the extractors, and when the handler
/// is done:
/// - on a 5xx response or a panic (answered 500), writes nothing;
/// - otherwise commits the changed keys under compare-and-swap and sends `Set-Cookie` only
///   if the cookie changed.
///
/// The `Cookie` request header and `Set-Cookie` response headers are marked sensitive, so
/// tower-http's tracing layers print them as `Sensitive`.
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("manager", &self.shared.manager)
            .field("secure", &self.shared.secure)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A builder; give it [`Builder::key_ring`] and [`Builder::store`], then
    /// [`Builder::build`].
    pub fn builder() -> Builder<NeedsKeyRing, NeedsStore> {
        Builder {
            ring: NeedsKeyRing,
            store: NeedsStore,
            mode: Mode::Server,
            policy: None,
            clock: None,
            cookie_name: None,
            plain_http: false,
            inserters: Vec::new(),
            #[cfg(feature = "migrate")]
            migration: None,
        }
    }

    /// The session manager, for work outside a request (an admin revoking a user, a purge
    /// task).
    pub fn manager(&self) -> &SessionManager {
        &self.shared.manager
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around the application.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for SessionService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone is not ready; the ready one serves this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(serve(shared, inner, req))
    }
}

async fn serve<S>(
    shared: Arc<Shared>,
    mut inner: S,
    mut req: Request<Body>,
) -> Result<Response, Infallible>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    mark_cookie_sensitive(req.headers_mut());
    let cookie = find_cookie(req.headers(), shared.manager.cookie_name());
    // An anonymous visitor's CSRF secret rides in its own signed cookie.
    let csrf_cookie = find_cookie(req.headers(), shared.manager.csrf_cookie_name());
    #[cfg_attr(not(feature = "migrate"), allow(unused_mut))]
    let mut session = match shared
        .manager
        .load_with_csrf(cookie.as_deref(), csrf_cookie.as_deref())
        .await
    {
        Ok(session) => session,
        Err(e) => return Ok(Error::from(e).into_response()),
    };
    // The legacy cookie to expire in the response, if the request carried one.
    #[cfg(feature = "migrate")]
    let expire_legacy = match migrate(&shared, &mut session, req.headers()) {
        Ok(expire) => expire,
        Err(e) => return Ok(e.into_response()),
    };
    let slot = Slot::new(shared.clone(), session);
    req.extensions_mut().insert(slot.clone());
    for insert in &shared.inserters {
        insert(req.extensions_mut());
    }
    let outcome = AssertUnwindSafe(inner.call(req)).catch_unwind().await;
    let mut response = match outcome {
        Err(_panic) => {
            slot.discard();
            tracing::error!("the handler panicked: session changes discarded, answering 500");
            return Ok(status_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
        Ok(Err(never)) => match never {},
        Ok(Ok(response)) => response,
    };
    if response.status().is_server_error() {
        slot.discard();
        return Ok(response);
    }
    #[cfg(feature = "migrate")]
    if let Some(line) = expire_legacy {
        if let Ok(mut value) = HeaderValue::from_str(&line) {
            value.set_sensitive(true);
            response.headers_mut().append(header::SET_COOKIE, value);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    let Some(session) = slot.take() else {
        return Ok(response);
    };
    let commit = match shared.manager.commit(session).await {
        Ok(commit) => commit,
        Err(e) => return Ok(Error::from(e).into_response()),
    };
    if let CookieUpdate::Set { value, .. } = &commit.cookie {
        let len = shared.manager.cookie_name().len() + 1 + value.len();
        if len > MAX_COOKIE_LEN {
            tracing::error!(
                cookie_len = len,
                max = MAX_COOKIE_LEN,
                "the session cookie would exceed what browsers keep; store less in the session or use server mode"
            );
            return Ok(status_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }
    if let Some(line) = shared.set_cookie(&commit.cookie) {
        match HeaderValue::from_str(&line) {
            Ok(mut value) => {
                value.set_sensitive(true);
                response.headers_mut().append(header::SET_COOKIE, value);
                // A response that sets a session cookie is one user's: no shared cache
                // may keep it.
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Err(_) => {
                tracing::error!("the session cookie is not a valid header value");
                return Ok(status_response(StatusCode::INTERNAL_SERVER_ERROR));
            }
        }
    }
    // The anonymous CSRF cookie: set at a visitor's first form, removed at login.
    let csrf_name = shared.manager.csrf_cookie_name();
    if let Some(line) = shared.cookie_line(csrf_name, &commit.csrf_cookie) {
        if append_set_cookie(&mut response, &line).is_err() {
            tracing::error!("the CSRF cookie is not a valid header value");
            return Ok(status_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }
    Ok(response)
}

/// Appends a sensitive `Set-Cookie` line, and `Cache-Control: no-store`: a response that
/// sets one of the user's cookies is theirs alone.
fn append_set_cookie(response: &mut Response, line: &str) -> Result<(), InvalidCookie> {
    let mut value = HeaderValue::from_str(line).map_err(|_| InvalidCookie)?;
    value.set_sensitive(true);
    response.headers_mut().append(header::SET_COOKIE, value);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(())
}

/// A cookie line that is not a valid header value.
#[derive(Debug)]
struct InvalidCookie;

/// Logs `session` in from the legacy cookie if it has no user and the cookie opens and
/// maps to one; returns the `Set-Cookie` line expiring the legacy cookie, if the request
/// carried it.
#[cfg(feature = "migrate")]
fn migrate(
    shared: &Shared,
    session: &mut cloakroom::Session,
    headers: &HeaderMap,
) -> Result<Option<String>, Error> {
    let Some(migration) = &shared.migration else {
        return Ok(None);
    };
    let Some(old) = find_cookie(headers, migration.cookie_name()) else {
        return Ok(None);
    };
    // A Cloakroom login wins over the legacy cookie.
    if session.user_id().is_none() {
        migration.apply(session, &old, headers, shared.clock.now())?;
    }
    Ok(migration.expiry_header(shared.secure))
}

fn mark_cookie_sensitive(headers: &mut HeaderMap) {
    if let header::Entry::Occupied(mut entry) = headers.entry(header::COOKIE) {
        for value in entry.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

/// The value of cookie `name` from the request's `Cookie` headers (the first one).
fn find_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim().trim_matches('"').to_owned())
        })
}

/// One request's session, shared by the extractors and the service.
#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) shared: Arc<Shared>,
    session: Arc<Mutex<Option<cloakroom::Session>>>,
}

impl Slot {
    fn new(shared: Arc<Shared>, session: cloakroom::Session) -> Self {
        Self {
            shared,
            session: Arc::new(Mutex::new(Some(session))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<cloakroom::Session>> {
        // A handler that panicked while holding the lock: the session is discarded anyway.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the session, or fails if the response has gone.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut cloakroom::Session) -> R) -> Result<R, Error> {
        match self.lock().as_mut() {
            Some(session) => Ok(f(session)),
            None => Err(Error::new(
                ErrorKind::Finished,
                "the session was used after its response was sent",
            )),
        }
    }

    pub(crate) fn take(&self) -> Option<cloakroom::Session> {
        self.lock().take()
    }

    pub(crate) fn put_back(&self, session: cloakroom::Session) {
        *self.lock() = Some(session);
    }

    fn discard(&self) {
        if let Some(session) = self.take() {
            self.shared.manager.discard(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(find_cookie(&h, "__Host-session").as_deref(), Some("xyz"));
        assert_eq!(find_cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(find_cookie(&h, "session"), None);
        mark_cookie_sensitive(&mut h);
        assert!(h
            .get_all(header::COOKIE)
            .iter()
            .all(HeaderValue::is_sensitive));
    }
}
