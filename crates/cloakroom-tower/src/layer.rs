//! The session layer: its builder, the service it wraps handlers in, and the per-request slot
//! the extractors share.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service};

use cloakroom::{
    Clock, Commit, CookieUpdate, Device, KeyRing, Mode, Policy, SessionManager, Store, SystemClock,
    DEFAULT_COOKIE_NAME, MAX_COOKIE_LEN,
};
use cloakroom::{PurgeConfig, PurgeHandle, Purger};

use crate::cookie::{self, CookieOptions, SameSite};
use crate::dbsc::{self, Binder, DeviceBinding};
use crate::error::{bare_response, Error, ErrorKind};
#[cfg(feature = "migrate")]
use crate::migrate::LegacyMigration;
use crate::proxy::{ForwardedHeader, TrustedProxies};
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
    site: SiteOptions,
    #[cfg(feature = "migrate")]
    migration: Option<LegacyMigration>,
    purge: Option<(std::time::Duration, usize)>,
}

/// The cookie and proxy options a site sets on the [`Builder`].
#[derive(Debug, Clone, Default)]
struct SiteOptions {
    domain: Option<String>,
    same_site: SameSite,
    browser_session: bool,
    trusted_proxies: Vec<String>,
    forwarded_header: ForwardedHeader,
    device_binding: Option<DeviceBinding>,
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
            site,
            #[cfg(feature = "migrate")]
            migration,
            purge,
        } = self;
        let mut f = f.debug_struct("Builder");
        f.field("mode", mode)
            .field("policy", policy)
            .field("cookie_name", cookie_name)
            .field("plain_http", plain_http)
            .field("user_loaders", &inserters.len())
            .field("site", site);
        #[cfg(feature = "migrate")]
        f.field("migration", migration);
        f.field("purge", purge);
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
            site: self.site,
            #[cfg(feature = "migrate")]
            migration: self.migration,
            purge: self.purge,
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
            site: self.site,
            #[cfg(feature = "migrate")]
            migration: self.migration,
            purge: self.purge,
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

    /// Sends the cookie to `domain` and every host under it (`Domain=example.com`), for a
    /// login shared by `www.example.com` and `shop.example.com`. Without it (the default)
    /// the cookie goes back only to the host that set it.
    ///
    /// Browsers refuse a `__Host-` cookie with a `Domain`, so this needs a cookie name
    /// without that prefix ([`Builder::with_cookie_name`], e.g. `__Secure-session`);
    /// [`Builder::build`] refuses the default name with a `Domain`. Every host under
    /// `domain` then receives the session cookie, and any of them can set one of that name
    /// for the others (see the warning [`Builder::build`] logs).
    #[must_use]
    pub fn with_cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.site.domain = Some(domain.into());
        self
    }

    /// The cookie's `SameSite` attribute (default [`SameSite::Lax`]). [`SameSite::None`]
    /// needs `Secure`: [`Builder::build`] refuses it with
    /// [`Builder::insecure_plain_http_for_local_development`].
    #[must_use]
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.site.same_site = same_site;
        self
    }

    /// Sends browser-session cookies: no `Max-Age`, so the browser forgets the cookie when
    /// it closes. The server-side deadlines (idle, absolute) apply as before; a "remember
    /// me" login ([`Session::login_remembered`](crate::Session::login_remembered)) still
    /// gets a cookie that lasts its lifetime.
    #[must_use]
    pub fn with_browser_session_cookie(mut self) -> Self {
        self.site.browser_session = true;
        self
    }

    /// The reverse proxies in front of the application, as addresses or networks
    /// (`["10.0.0.0/8", "192.0.2.7", "fd00::/8"]`). When a request comes from one of them,
    /// the client address a login records ([`Device`]) is read from the header those
    /// proxies write ([`Builder::with_forwarded_header`], default `X-Forwarded-For`): the
    /// right-most address in it that is not one of them. From any other peer the header is
    /// ignored and the peer's address is the client's. The peer is known only when the
    /// server hands it over: serve the router with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    #[must_use]
    pub fn with_trusted_proxies<I>(mut self, proxies: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.site.trusted_proxies = proxies.into_iter().map(|p| p.as_ref().to_owned()).collect();
        self
    }

    /// Which header the trusted proxies write the client's address in (default
    /// [`ForwardedHeader::XForwardedFor`]).
    #[must_use]
    pub fn with_forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.site.forwarded_header = header;
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

    /// Binds sessions to a key the browser keeps on the device, where the browser supports
    /// Device Bound Session Credentials (docs/device-binding.md): a login's response asks
    /// the browser to register a key, and once it has, every request of the session needs a
    /// short-lived bound cookie that only the key can renew; without one the request is
    /// served as logged out. Browsers without DBSC keep unbound sessions. Mount the
    /// endpoints with [`SessionLayer::device_binding_routes`]. Server mode only
    /// ([`Builder::build`] refuses the others: their cookies carry the data, so a copy taken
    /// before the binding would stay unbound).
    #[must_use]
    pub fn with_device_binding(mut self, binding: DeviceBinding) -> Self {
        self.site.device_binding = Some(binding);
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

impl<K, S> Builder<K, S> {
    /// Deletes expired records in the background: every `interval` (and once at start) the
    /// layer's store purges in batches of at most `batch` records until none is left, backing
    /// off while the store is down. The task runs as long as the layer (or a clone of it)
    /// lives; see [`cloakroom::Purger`] and `docs/stores.md` for what a purge does in each
    /// store. Off unless asked for.
    ///
    /// [`Builder::build`] then needs a tokio runtime to start the task on.
    #[must_use]
    pub fn with_background_purge(mut self, interval: std::time::Duration, batch: usize) -> Self {
        self.purge = Some((interval, batch));
        self
    }
}

impl Builder<KeyRing, Arc<dyn Store>> {
    /// The layer.
    ///
    /// A cookie name without the `__Host-` prefix logs a warning saying what that costs: a
    /// sibling subdomain, or a plain-http page of the same host, can then set a cookie of
    /// that name (the layer tries every cookie of its name, so a planted one cannot log the
    /// user out, but a planted valid session of the planter's logs the user in as them),
    /// and with a `Domain` every host under it receives the cookie.
    ///
    /// # Errors
    /// [`ErrorKind::Session`] for an invalid cookie name (not an RFC 6265 token, or a
    /// `__Host-`/`__Secure-` name with plain http), a `Domain` that is not a host name or
    /// comes with a `__Host-` name, `SameSite=None` with plain http, a trusted proxy that is
    /// not an address or network, or a key ring the codec cannot use; device binding in a
    /// mode other than [`Mode::Server`] or with invalid options; with
    /// [`Builder::with_background_purge`], for a zero interval or batch, or when called
    /// outside a tokio runtime.
    pub fn build(self) -> Result<SessionLayer, Error> {
        let invalid = |msg: String| {
            Error::from(cloakroom::Error::new(
                cloakroom::ErrorKind::InvalidInput,
                msg,
            ))
        };
        let name = match (&self.cookie_name, self.plain_http) {
            (Some(name), _) => name.clone(),
            (None, false) => DEFAULT_COOKIE_NAME.to_owned(),
            (None, true) => PLAIN_HTTP_COOKIE_NAME.to_owned(),
        };
        if self.plain_http && (name.starts_with("__Host-") || name.starts_with("__Secure-")) {
            return Err(invalid(
                "a __Host- or __Secure- cookie needs Secure, which plain http cannot have".into(),
            ));
        }
        let domain = match &self.site.domain {
            None => None,
            Some(domain) => {
                if name.starts_with("__Host-") {
                    return Err(invalid(format!(
                        "cookie {name:?} cannot have a Domain: browsers refuse a __Host- cookie with one; \
                         name it without the prefix (with_cookie_name(\"__Secure-session\")) to share it with {domain:?}"
                    )));
                }
                Some(cookie::check_domain(domain).map_err(invalid)?)
            }
        };
        if self.site.same_site == SameSite::None && self.plain_http {
            return Err(invalid(
                "SameSite=None needs Secure, which plain http cannot have".into(),
            ));
        }
        let proxies = TrustedProxies::parse(&self.site.trusted_proxies, self.site.forwarded_header)
            .map_err(invalid)?;
        #[cfg(feature = "migrate")]
        if let Some(migration) = &self.migration {
            if migration.cookie_name() == name {
                return Err(invalid(
                    "the legacy session cookie and the Cloakroom cookie have the same name".into(),
                ));
            }
        }
        if self.plain_http {
            tracing::warn!(
                cookie = %name,
                "session cookie without Secure (plain http for local development): never serve this beyond the machine"
            );
        }
        if self.cookie_name.is_some() && !name.starts_with("__Host-") {
            let scope = domain.as_deref().map_or_else(
                || "this host".to_owned(),
                |d| format!("every host under {d} (Domain={d}), each of which receives the session cookie"),
            );
            tracing::warn!(
                cookie = %name,
                "session cookie without the __Host- prefix: browsers then accept a cookie of this name set by a sibling subdomain or a plain-http page, not only by {scope} over https (cookie tossing); a planted invalid cookie is skipped, but a planted valid session would log the user in as its planter"
            );
        }
        let cookie = CookieOptions {
            name,
            domain,
            same_site: self.site.same_site,
            secure: !self.plain_http,
            browser_session: self.site.browser_session,
        };
        let binder = match self.site.device_binding {
            None => None,
            Some(_) if self.mode != Mode::Server => {
                return Err(invalid(
                    "device binding needs server mode: in client and hybrid modes the cookie carries the data, so a copy taken before the binding would stay unbound".into(),
                ));
            }
            Some(binding) => Some(binding.build(&self.ring, &cookie).map_err(invalid)?),
        };
        let name = cookie.name.clone();
        let purge_store = self.store.clone();
        let mut manager = SessionManager::new(&self.ring, self.store)?
            .with_mode(self.mode)
            .with_cookie_name(&name)?;
        if let Some(policy) = self.policy {
            manager = manager.with_policy(policy);
        }
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        manager = manager.with_clock(clock.clone());
        let purger = match self.purge {
            Some((interval, batch)) => Some(Purger::spawn(
                purge_store,
                clock.clone(),
                PurgeConfig::new(interval, batch)?,
            )?),
            None => None,
        };
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                manager,
                cookie,
                binder,
                proxies,
                inserters: self.inserters,
                clock,
                #[cfg(feature = "migrate")]
                migration: self.migration,
                purger,
            }),
        })
    }
}

pub(crate) struct Shared {
    pub(crate) manager: SessionManager,
    pub(crate) cookie: CookieOptions,
    /// Device binding, if on.
    pub(crate) binder: Option<Binder>,
    proxies: TrustedProxies,
    inserters: Vec<Inserter>,
    pub(crate) clock: Arc<dyn Clock>,
    #[cfg(feature = "migrate")]
    migration: Option<LegacyMigration>,
    /// The background purger; it stops when the last clone of the layer is dropped.
    purger: Option<PurgeHandle>,
}

/// Cloakroom sessions for an axum [`Router`](axum::Router) or any tower service of
/// `Request<B>` to `Response<R>`, whatever the bodies (`R: Default`: the layer's own
/// answers, 503 and 500, have an empty body) and the error type (passed through).
///
/// Per request it loads the session from the cookie (a store that is down answers 503 with
/// `Retry-After`, before the handler runs), hands it to the extractors, and when the handler
/// is done:
/// - on a 5xx or 408 response (a timeout layer's answer for a handler it cancelled), an
///   error from the inner service (passed through) or a panic (answered 500), writes
///   nothing;
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
            .field("cookie", &self.shared.cookie)
            .field("trusted_proxies", &self.shared.proxies)
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
            site: SiteOptions::default(),
            #[cfg(feature = "migrate")]
            migration: None,
            purge: None,
        }
    }

    /// The session manager, for work outside a request (an admin revoking a user, a purge
    /// task).
    pub fn manager(&self) -> &SessionManager {
        &self.shared.manager
    }

    /// The registration and refresh endpoints of [`Builder::with_device_binding`], to merge
    /// into the application's router inside this layer
    /// (`Router::new().route(..).merge(sessions.device_binding_routes()).layer(sessions)`).
    /// No routes without device binding.
    pub fn device_binding_routes<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        match &self.shared.binder {
            Some(binder) => dbsc::routes(binder),
            None => axum::Router::new(),
        }
    }

    /// The background purger, if [`Builder::with_background_purge`] started one: its
    /// statistics for a health page.
    pub fn purger(&self) -> Option<&PurgeHandle> {
        self.shared.purger.as_ref()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the ready one serves this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(serve(shared, inner, req))
    }
}

/// Whether a response of this status means the handler did not complete: nothing of its
/// session is written. 408 is what tower-http's `TimeoutLayer` answers for a handler it
/// cancelled half-way.
fn failed(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT
}

async fn serve<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    mut req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Default,
{
    mark_cookie_sensitive(req.headers_mut());
    let candidates = cookie::values(req.headers(), &shared.cookie.name);
    let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
    // An anonymous visitor's CSRF secret rides in its own signed cookie.
    let csrf_cookie = cookie::first(req.headers(), shared.manager.csrf_cookie_name());
    let mut session = match shared
        .manager
        .load_any_with_csrf(&candidates, csrf_cookie.as_deref())
        .await
    {
        Ok(session) => session,
        Err(e) => return Ok(Error::from(e).into_bare_response()),
    };
    // A bound session without its bound cookie (a copied cookie, off the device) is served
    // as logged out; what is stored stays for the browser that holds the key.
    if let Some(binder) = &shared.binder {
        let now = shared.clock.now();
        if dbsc::must_log_out(binder, &session, req.headers(), req.uri().path(), now) {
            tracing::debug!("bound session without a valid bound cookie: served as logged out");
            shared.manager.discard(session);
            session = match shared
                .manager
                .load_any_with_csrf(&[], csrf_cookie.as_deref())
                .await
            {
                Ok(session) => session,
                Err(e) => return Ok(Error::from(e).into_bare_response()),
            };
        }
    }
    // The legacy cookie to expire in the response, if the request carried one.
    #[cfg(feature = "migrate")]
    let (expire_legacy, consume) = match migrate(&shared, &mut session, req.headers()).await {
        Ok(migrated) => migrated,
        Err(e) => return Ok(e.into_bare_response()),
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let request = RequestInfo {
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        client_ip: shared.proxies.client_ip(peer, req.headers()),
    };
    let slot = Slot::new(shared.clone(), session, request);
    req.extensions_mut().insert(slot.clone());
    for insert in &shared.inserters {
        insert(req.extensions_mut());
    }
    // A panic in `call` itself or in the future it returns: nothing written, 500.
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    #[cfg_attr(not(feature = "migrate"), allow(unused_mut))]
    let mut response = match outcome {
        Err(_panic) => {
            slot.discard();
            tracing::error!("the handler panicked: session changes discarded, answering 500");
            return Ok(bare_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
        Ok(Err(e)) => {
            // An error instead of a response (a timeout layer's): the handler did not
            // complete, so nothing of it is written.
            slot.discard();
            return Err(e);
        }
        Ok(Ok(response)) => response,
    };
    if failed(response.status()) {
        slot.discard();
        return Ok(response);
    }
    #[cfg(feature = "migrate")]
    if let Some(line) = expire_legacy {
        if append_set_cookie(&mut response, &line).is_err() {
            tracing::warn!("the legacy cookie's expiry is not a valid header value; not sent");
        }
    }
    let Some(session) = slot.take() else {
        return Ok(response);
    };
    // A migrated login uses the legacy cookie up; if another request did first, this one's
    // login is dropped.
    #[cfg(feature = "migrate")]
    if let Some(consume) = consume {
        match consume.consume(shared.manager.store().as_ref()).await {
            Ok(true) => {}
            Ok(false) => {
                shared.manager.discard(session);
                return Ok(response);
            }
            Err(e) => return Ok(e.into_bare_response()),
        }
    }
    let remembered = session.is_remembered();
    // A login asks a browser with DBSC to bind the new session (sent once the commit is in).
    let registration = match (&shared.binder, session.is_logging_in(), session.id_hash()) {
        (Some(binder), true, Some(id_hash)) => {
            match binder.registration_header(&id_hash, shared.clock.now()) {
                Ok(value) => Some(value),
                Err(e) => return Ok(e.into_bare_response()),
            }
        }
        _ => None,
    };
    let commit = match commit_to_the_end(&shared, session).await {
        Ok(commit) => commit,
        Err(e) => return Ok(e.into_bare_response()),
    };
    if let CookieUpdate::Set { value, .. } = &commit.cookie {
        let len = shared.cookie.name.len() + 1 + value.len();
        if len > MAX_COOKIE_LEN {
            tracing::error!(
                cookie_len = len,
                max = MAX_COOKIE_LEN,
                "the session cookie would exceed what browsers keep; store less in the session or use server mode"
            );
            return Ok(bare_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }
    if let Some(line) = shared.cookie.set_cookie(&commit.cookie, remembered) {
        if append_set_cookie(&mut response, &line).is_err() {
            tracing::error!("the session cookie is not a valid header value");
            return Ok(bare_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }
    if let Some(value) = registration {
        response.headers_mut().append(
            http::HeaderName::from_static(dbsc::REGISTRATION_HEADER),
            value,
        );
    }
    // A logout removes the bound cookie with the session's.
    if let (Some(binder), CookieUpdate::Remove) = (&shared.binder, &commit.cookie) {
        if append_set_cookie(&mut response, &binder.bound_cookie_removal(&shared.cookie)).is_err() {
            tracing::error!("the bound cookie's removal is not a valid header value");
        }
    }
    // The anonymous CSRF cookie: set at a visitor's first form, removed at login.
    let csrf_name = shared.manager.csrf_cookie_name();
    if let Some(line) = shared
        .cookie
        .set_cookie_named(csrf_name, &commit.csrf_cookie, false)
    {
        if append_set_cookie(&mut response, &line).is_err() {
            tracing::error!("the CSRF cookie is not a valid header value");
            return Ok(bare_response(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }
    Ok(response)
}

/// Commits `session`, on a task of its own under a tokio runtime, so a response future
/// dropped during the commit (a client gone, a timeout outside this layer) does not stop
/// it half-way: a login's new record is never left beside the old one. Without a tokio
/// runtime, or without changes (a read-only request commits at most an idle-deadline
/// touch, which is safe to lose), the commit runs in place: no task per request.
async fn commit_to_the_end(
    shared: &Arc<Shared>,
    session: cloakroom::Session,
) -> Result<Commit, Error> {
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if session.has_changes() => runtime,
        _ => return Ok(shared.manager.commit(session).await?),
    };
    let shared = shared.clone();
    match runtime
        .spawn(async move { shared.manager.commit(session).await })
        .await
    {
        Ok(result) => Ok(result?),
        Err(e) => Err(Error::new(
            ErrorKind::Session,
            format!("the session commit did not finish: {e}"),
        )),
    }
}

/// Appends a sensitive `Set-Cookie` line, and `Cache-Control: no-store`: a response that
/// sets one of the user's cookies is theirs alone.
fn append_set_cookie<B>(response: &mut http::Response<B>, line: &str) -> Result<(), InvalidCookie> {
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
/// carried it, and what uses the legacy cookie up once the login is committed.
#[cfg(feature = "migrate")]
async fn migrate(
    shared: &Shared,
    session: &mut cloakroom::Session,
    headers: &HeaderMap,
) -> Result<(Option<String>, Option<crate::migrate::Consume>), Error> {
    let Some(migration) = &shared.migration else {
        return Ok((None, None));
    };
    let Some(old) = cookie::first(headers, migration.cookie_name()) else {
        return Ok((None, None));
    };
    // A Cloakroom login wins over the legacy cookie.
    let mut consume = None;
    if session.user_id().is_none() {
        let store = shared.manager.store().as_ref();
        consume = migration
            .apply(session, &old, headers, store, shared.clock.now())
            .await?;
    }
    Ok((migration.expiry_header(shared.cookie.secure), consume))
}

fn mark_cookie_sensitive(headers: &mut HeaderMap) {
    if let header::Entry::Occupied(mut entry) = headers.entry(header::COOKIE) {
        for value in entry.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

/// What a login takes from the request by default ([`Device`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    user_agent: Option<HeaderValue>,
    client_ip: Option<IpAddr>,
}

/// The most of a `User-Agent` a login records.
const MAX_USER_AGENT_CHARS: usize = 256;

impl RequestInfo {
    /// `device` with the user agent and client address filled in where the application
    /// left them empty.
    pub(crate) fn fill(&self, mut device: Device) -> Device {
        if device.user_agent.is_none() {
            if let Some(agent) = &self.user_agent {
                let agent: String = String::from_utf8_lossy(agent.as_bytes())
                    .chars()
                    .take(MAX_USER_AGENT_CHARS)
                    .collect();
                device = device.with_user_agent(agent);
            }
        }
        if device.ip.is_none() {
            if let Some(ip) = self.client_ip {
                device = device.with_ip(ip.to_string());
            }
        }
        device
    }
}

/// One request's session, shared by the extractors and the service.
#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) shared: Arc<Shared>,
    session: Arc<Mutex<Option<cloakroom::Session>>>,
    pub(crate) request: Arc<RequestInfo>,
}

impl Slot {
    fn new(shared: Arc<Shared>, session: cloakroom::Session, request: RequestInfo) -> Self {
        Self {
            shared,
            session: Arc::new(Mutex::new(Some(session))),
            request: Arc::new(request),
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

    /// Takes the session out for good (the response is ready). Never take it out to put it
    /// back after an await: a cancelled request would lose it. Read what is needed under
    /// the lock, await, then apply the result under the lock (see
    /// `Session::sign_out_other_sessions`).
    pub(crate) fn take(&self) -> Option<cloakroom::Session> {
        self.lock().take()
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
    fn cookie_headers_are_marked_sensitive() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        mark_cookie_sensitive(&mut h);
        assert!(h
            .get_all(header::COOKIE)
            .iter()
            .all(HeaderValue::is_sensitive));
    }

    #[test]
    fn a_login_fills_what_the_application_left_empty() {
        let info = RequestInfo {
            user_agent: Some(HeaderValue::from_str(&"x".repeat(1000)).unwrap()),
            client_ip: Some("203.0.113.5".parse().unwrap()),
        };
        let d = info.fill(Device::new().with_label("laptop"));
        assert_eq!(
            d.user_agent.as_deref().map(str::len),
            Some(MAX_USER_AGENT_CHARS)
        );
        assert_eq!(d.ip.as_deref(), Some("203.0.113.5"));
        assert_eq!(d.label.as_deref(), Some("laptop"));
        let d = info.fill(Device::new().with_user_agent("mine").with_ip("192.0.2.1"));
        assert_eq!(d.user_agent.as_deref(), Some("mine"));
        assert_eq!(d.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(RequestInfo::default().fill(Device::new()), Device::new());
    }
}
