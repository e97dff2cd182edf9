//! The typestate builder of the [`SessionLayer`]: a key ring and a store are required by
//! type, everything else is a `with_*` option.

use std::fmt;
use std::sync::Arc;

use cloakroom::{
    Clock, KeyRing, Mode, Policy, PurgeConfig, Purger, SessionManager, Store, SystemClock,
    DEFAULT_COOKIE_NAME,
};

use super::{Inserter, SessionLayer, Shared};
use crate::cookie::{self, CookieOptions, SameSite};
use crate::dbsc::DeviceBinding;
use crate::error::Error;
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
}

impl<S> Builder<NeedsKeyRing, S> {
    /// The key ring that signs (server mode) or seals (client and hybrid) the cookies.
    pub fn key_ring(self, ring: &KeyRing) -> Builder<KeyRing, S> {
        self.map_parts(|_, store| (ring.clone(), store))
    }
}

impl<K> Builder<K, NeedsStore> {
    /// The store that keeps the records (server and hybrid modes) and users' epochs (every
    /// mode).
    pub fn store(self, store: Arc<dyn Store>) -> Builder<K, Arc<dyn Store>> {
        self.map_parts(|ring, _| (ring, store))
    }
}

impl<K, S> Builder<K, S> {
    /// The same builder with its key ring and store replaced by `f` (the typestate steps).
    fn map_parts<K2, S2>(self, f: impl FnOnce(K, S) -> (K2, S2)) -> Builder<K2, S2> {
        let (ring, store) = f(self.ring, self.store);
        Builder {
            ring,
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
    /// the client address a login records ([`Device`](cloakroom::Device)) is read from the
    /// header those proxies write ([`Builder::with_forwarded_header`], default
    /// `X-Forwarded-For`): the right-most address in it that is not one of them. From any
    /// other peer the header is ignored and the peer's address is the client's. The peer is
    /// known only when the server hands it over: serve the router with
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
    /// [`ErrorKind::Session`](crate::ErrorKind::Session) for an invalid cookie name (not an RFC 6265 token, or a
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
