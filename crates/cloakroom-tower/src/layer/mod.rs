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

use cloakroom::{Clock, Commit, CookieUpdate, Device, PurgeHandle, SessionManager, MAX_COOKIE_LEN};

use crate::cookie::{self, CookieOptions};
use crate::dbsc::{self, Binder};
use crate::error::{bare_response, Error, ErrorKind};
#[cfg(feature = "migrate")]
use crate::migrate::LegacyMigration;
use crate::proxy::TrustedProxies;

mod builder;
#[cfg(test)]
mod tests;

pub use builder::{Builder, NeedsKeyRing, NeedsStore, PLAIN_HTTP_COOKIE_NAME};

type Inserter = Arc<dyn Fn(&mut http::Extensions) + Send + Sync>;

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
