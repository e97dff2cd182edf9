//! Device Bound Session Credentials (the W3C webappsec-dbsc draft), server side: a browser
//! that supports it binds the session to a key it keeps on the device, and every request of
//! a bound session then needs a short-lived cookie that only that key can renew.
//!
//! The flow (docs/device-binding.md):
//! 1. A login's response carries `Secure-Session-Registration` with a challenge.
//! 2. The browser makes a key pair and posts a JWT signed with it over the challenge to the
//!    registration endpoint; the layer checks it, stores the public key in the session's
//!    record (a reserved key, so every store carries it) and answers with the session
//!    configuration and the bound cookie.
//! 3. Before the bound cookie runs out the browser posts to the refresh endpoint; the layer
//!    answers 403 with a fresh challenge, the browser signs it, and the layer issues a new
//!    bound cookie. A proof that does not verify with the session's key ends the session.
//! 4. A request of a bound session without a valid bound cookie is served as logged out.

mod endpoints;
mod proof;

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};

use cloakroom::{IdHash, KeyRing, Record, Session, Store};
use cloakroom_token::Codec;

use crate::cookie::CookieOptions;
use crate::error::{Error, ErrorKind};

pub(crate) use endpoints::routes;
pub(crate) use proof::PublicKey;

/// The response header that asks the browser to start a bound session.
pub(crate) const REGISTRATION_HEADER: &str = "secure-session-registration";
/// The request header carrying the browser's signed proof.
pub(crate) const RESPONSE_HEADER: &str = "secure-session-response";
/// The response header carrying a challenge for the next proof.
pub(crate) const CHALLENGE_HEADER: &str = "secure-session-challenge";
/// The request header naming the bound session a refresh is for.
pub(crate) const SESSION_ID_HEADER: &str = "sec-secure-session-id";

/// Device Bound Session Credentials for a [`SessionLayer`](crate::SessionLayer), given to
/// [`Builder::with_device_binding`](crate::Builder::with_device_binding). The defaults suit
/// most sites; every `with_*` changes one.
///
/// Mount the two endpoints with
/// [`SessionLayer::device_binding_routes`](crate::SessionLayer::device_binding_routes).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use axum::Router;
/// use cloakroom_tower::{DeviceBinding, KeyRing, MemoryStore, SessionLayer};
///
/// let sessions = SessionLayer::builder()
///     .key_ring(&KeyRing::generate()?)
///     .store(Arc::new(MemoryStore::new()))
///     .with_device_binding(DeviceBinding::new().with_bound_cookie_lifetime(Duration::from_secs(300)))
///     .build()?;
/// let app: Router = Router::new()
///     // .route(...) your pages
///     .merge(sessions.device_binding_routes())
///     .layer(sessions);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DeviceBinding {
    registration_path: String,
    refresh_path: String,
    bound_cookie_lifetime: Duration,
    challenge_lifetime: Duration,
    old_challenge_window: Duration,
    registration_grace: Duration,
}

impl Default for DeviceBinding {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceBinding {
    /// The defaults: endpoints `/.cloakroom/dbsc/register` and `/.cloakroom/dbsc/refresh`, a
    /// bound cookie of 5 minutes, challenges of 10 minutes, an old challenge accepted for
    /// 10 seconds after a newer one was issued, a grace of 10 seconds after registration.
    pub fn new() -> Self {
        Self {
            registration_path: "/.cloakroom/dbsc/register".to_owned(),
            refresh_path: "/.cloakroom/dbsc/refresh".to_owned(),
            bound_cookie_lifetime: Duration::from_secs(5 * 60),
            challenge_lifetime: Duration::from_secs(10 * 60),
            old_challenge_window: Duration::from_secs(10),
            registration_grace: Duration::from_secs(10),
        }
    }

    /// The path of the registration endpoint (an absolute path, like `/dbsc/start`).
    #[must_use]
    pub fn with_registration_path(mut self, path: impl Into<String>) -> Self {
        self.registration_path = path.into();
        self
    }

    /// The path of the refresh endpoint.
    #[must_use]
    pub fn with_refresh_path(mut self, path: impl Into<String>) -> Self {
        self.refresh_path = path.into();
        self
    }

    /// How long a bound cookie lasts (default 5 minutes): how long a copied cookie keeps
    /// working off the device, and how often the browser signs a refresh.
    #[must_use]
    pub fn with_bound_cookie_lifetime(mut self, lifetime: Duration) -> Self {
        self.bound_cookie_lifetime = lifetime;
        self
    }

    /// How long a challenge can be answered (default 10 minutes; the browser keeps the one
    /// a refresh hands out for the next refresh, so make it longer than the bound cookie).
    /// An expired one is answered 403 with a fresh challenge, which costs a round trip.
    #[must_use]
    pub fn with_challenge_lifetime(mut self, lifetime: Duration) -> Self {
        self.challenge_lifetime = lifetime;
        self
    }

    /// How long a challenge stays good once a newer one was issued for the same session
    /// (default 10 seconds): a proof for it may be on its way when the newer one goes out.
    #[must_use]
    pub fn with_old_challenge_window(mut self, window: Duration) -> Self {
        self.old_challenge_window = window;
        self
    }

    /// How long after the registration a request of the session without a bound cookie is
    /// still served as signed in (default 10 seconds): the requests the browser started
    /// while it was registering (the page a login redirects to, its images) left before the
    /// bound cookie arrived. A copy taken before the registration works that much longer.
    #[must_use]
    pub fn with_registration_grace(mut self, grace: Duration) -> Self {
        self.registration_grace = grace;
        self
    }

    /// Checks the options and derives the keys.
    pub(crate) fn build(self, ring: &KeyRing, cookie: &CookieOptions) -> Result<Binder, String> {
        for path in [&self.registration_path, &self.refresh_path] {
            let ok = path.starts_with('/')
                && path.len() <= 200
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@%".contains(&b));
            if !ok {
                return Err(format!(
                    "device binding endpoint {path:?} is not an absolute URL path"
                ));
            }
        }
        if self.registration_path == self.refresh_path {
            return Err("the device binding's registration and refresh paths are the same".into());
        }
        let secs = |d: Duration| d.as_secs();
        if secs(self.bound_cookie_lifetime) == 0 || secs(self.challenge_lifetime) == 0 {
            return Err("device binding lifetimes must be at least one second".into());
        }
        let bound_cookie = format!("{}-bound", cookie.name);
        let codec = |purpose: String| ring.codec(&purpose).map_err(|e| e.to_string());
        Ok(Binder {
            challenges: codec(format!("{}/dbsc-challenge", cookie.name))?,
            // A purpose no cookie name can have ('/' is not allowed in one).
            cookies: codec(format!("{}/dbsc-bound", cookie.name))?,
            bound_cookie,
            config: self,
        })
    }
}

/// A [`DeviceBinding`] ready to serve: its options and the keys of its tokens.
pub(crate) struct Binder {
    pub(crate) config: DeviceBinding,
    pub(crate) bound_cookie: String,
    challenges: Codec,
    cookies: Codec,
}

impl fmt::Debug for Binder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            config,
            bound_cookie,
            challenges: _,
            cookies: _,
        } = self;
        f.debug_struct("Binder")
            .field("config", config)
            .field("bound_cookie", bound_cookie)
            .finish_non_exhaustive()
    }
}

/// What a bound session keeps (under the record's reserved binding key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    /// The draft's session identifier: random, given to the browser.
    pub(crate) id: String,
    /// The browser's public key.
    pub(crate) key: PublicKey,
    /// When the key was registered (unix seconds).
    pub(crate) since: u64,
    /// When the newest challenge of this session was issued.
    pub(crate) challenged: u64,
}

impl Binding {
    pub(crate) fn of(session: &Session) -> Option<Self> {
        let value = session.device_binding()?.clone();
        rmpv::ext::from_value(value).ok()
    }

    pub(crate) fn to_value(&self) -> Option<cloakroom::Value> {
        rmpv::ext::to_value(self).ok()
    }
}

/// What a challenge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Registration, bound to the id hash of the logged-in session.
    Register = 1,
    /// Refresh, bound to the binding's identifier.
    Refresh = 2,
}

impl Binder {
    /// A fresh challenge for `purpose` and `context`.
    pub(crate) fn challenge(
        &self,
        purpose: Purpose,
        context: &[u8],
        now: u64,
    ) -> Result<String, Error> {
        let mut payload = vec![purpose as u8];
        payload.extend_from_slice(&random::<16>()?);
        payload.extend_from_slice(context);
        let until = now.saturating_add(self.config.challenge_lifetime.as_secs());
        self.challenges
            .sign(&payload, now, until)
            .map_err(|e| Error::new(ErrorKind::Session, format!("cannot mint a challenge: {e}")))
    }

    /// Checks a challenge we issued for `purpose` and `context`; returns when it was issued
    /// and when it expires. `None` if it is not ours, for another session or purpose, or
    /// past its lifetime.
    pub(crate) fn open_challenge(
        &self,
        challenge: &str,
        purpose: Purpose,
        context: &[u8],
        now: u64,
    ) -> Option<(u64, u64)> {
        let opened = self.challenges.verify(challenge, now).ok()?;
        let payload = opened.payload();
        if payload.len() != 17 + context.len()
            || payload[0] != purpose as u8
            || &payload[17..] != context
        {
            return None;
        }
        Some((opened.issued_at(), opened.expires_at()))
    }

    /// The `Set-Cookie` line of a fresh bound cookie for `binding`.
    pub(crate) fn bound_cookie(
        &self,
        options: &CookieOptions,
        binding: &Binding,
        now: u64,
    ) -> Result<String, Error> {
        let lifetime = self.config.bound_cookie_lifetime.as_secs();
        let value = self
            .cookies
            .sign(binding.id.as_bytes(), now, now.saturating_add(lifetime))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Session,
                    format!("cannot mint a bound cookie: {e}"),
                )
            })?;
        let mut c = options.cookie(&self.bound_cookie, value);
        c.set_max_age(cookie::time::Duration::seconds(
            i64::try_from(lifetime).unwrap_or(i64::MAX),
        ));
        Ok(c.to_string())
    }

    /// The `Set-Cookie` line that removes the bound cookie.
    pub(crate) fn bound_cookie_removal(&self, options: &CookieOptions) -> String {
        let mut c = options.cookie(&self.bound_cookie, String::new());
        c.set_max_age(cookie::time::Duration::ZERO);
        c.set_expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
        c.to_string()
    }

    /// The bound cookie's attributes as the session configuration names them.
    pub(crate) fn bound_cookie_attributes(&self, options: &CookieOptions) -> String {
        let line = options
            .cookie(&self.bound_cookie, String::new())
            .to_string();
        let prefix = format!("{}=", self.bound_cookie);
        line.strip_prefix(&prefix)
            .unwrap_or(&line)
            .trim_start_matches(';')
            .trim()
            .to_owned()
    }

    /// Whether the request carries a bound cookie that is valid for `binding` now.
    pub(crate) fn has_bound_cookie(
        &self,
        headers: &HeaderMap,
        binding: &Binding,
        now: u64,
    ) -> bool {
        crate::cookie::values(headers, &self.bound_cookie)
            .iter()
            .any(|value| {
                self.cookies
                    .verify(value, now)
                    .is_ok_and(|opened| opened.payload() == binding.id.as_bytes())
            })
    }

    /// Whether `path` is one of the endpoints (they serve bound sessions without the bound
    /// cookie: a refresh happens because it is missing).
    pub(crate) fn is_endpoint(&self, path: &str) -> bool {
        path == self.config.registration_path || path == self.config.refresh_path
    }

    /// The `Secure-Session-Registration` value for a login whose new session has `id_hash`.
    pub(crate) fn registration_header(
        &self,
        id_hash: &IdHash,
        now: u64,
    ) -> Result<HeaderValue, Error> {
        let challenge = self.challenge(Purpose::Register, id_hash.as_bytes(), now)?;
        let value = format!(
            "(ES256 RS256);path=\"{}\";challenge=\"{challenge}\"",
            self.config.registration_path
        );
        HeaderValue::from_str(&value).map_err(|_| {
            Error::new(
                ErrorKind::Session,
                "the registration header is not a valid header value",
            )
        })
    }

    /// Uses `challenge` up: a marker record under a hash of it, which every store creates at
    /// most once. False if it was used already.
    pub(crate) async fn use_up(
        &self,
        store: &dyn Store,
        what: &str,
        input: &[u8],
        now: u64,
        until: u64,
    ) -> Result<bool, Error> {
        let mut data = format!("cloakroom/dbsc-{what}/1\0").into_bytes();
        data.extend_from_slice(input);
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        let mut marker = Record::new(
            IdHash::from_bytes(bytes),
            now,
            &cloakroom::Policy::default(),
        );
        marker.idle_deadline = until.max(now.saturating_add(1));
        marker.absolute_deadline = marker.idle_deadline;
        match store.create(&marker, now).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == cloakroom::store::ErrorKind::Conflict => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// `N` random bytes from the OS.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Error::new(ErrorKind::Session, "the OS random generator failed"))?;
    Ok(out)
}

/// A fresh binding identifier.
pub(crate) fn new_binding_id() -> Result<String, Error> {
    Ok(URL_SAFE_NO_PAD.encode(random::<16>()?))
}

/// The string of an sf-string header value (`"..."` with `\"` and `\\` escapes; parameters
/// after it ignored); a bare token-ish value is taken as is.
pub(crate) fn sf_string(value: &str) -> Option<String> {
    let value = value.trim();
    let Some(rest) = value.strip_prefix('"') else {
        // A bare value: take it up to any parameter.
        let bare = value.split(';').next()?.trim();
        return (!bare.is_empty() && bare.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
            .then(|| bare.to_owned());
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                _ => return None,
            },
            '"' => return Some(out),
            c if (' '..='~').contains(&c) => out.push(c),
            _ => return None,
        }
    }
    None
}

/// `text` as an sf-string (our values are base64url and dots: nothing to escape, but
/// escape anyway).
pub(crate) fn to_sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether a request of `session` must be served as logged out: the session is bound, the
/// registration's grace is over and the request has no valid bound cookie. The layer then
/// swaps the session for a fresh anonymous one (nothing stored is touched, so the browser
/// that holds the key refreshes and carries on).
pub(crate) fn must_log_out(
    binder: &Binder,
    session: &Session,
    headers: &HeaderMap,
    path: &str,
    now: u64,
) -> bool {
    if binder.is_endpoint(path) {
        return false;
    }
    match Binding::of(session) {
        Some(binding) => {
            let grace = binder.config.registration_grace.as_secs();
            now >= binding.since.saturating_add(grace)
                && !binder.has_bound_cookie(headers, &binding, now)
        }
        // A binding that does not decode: fail closed.
        None => session.device_binding().is_some(),
    }
}

#[cfg(test)]
mod tests;
