//! The daemon's configuration: the TOML config file, and what the flags override.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloakroom::{Clock, Store};
use serde::Deserialize;

use crate::error::{Error, ErrorKind};

/// The data directory when neither `--data-dir` nor `data_dir` names one.
pub const DEFAULT_DATA_DIR: &str = "./cloakroom-data";

/// How many live sessions the cache keeps by default (for stores only this daemon writes).
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

/// CURVE for the daemon's sockets: the daemon's secret key and the clients it admits.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurveConfig {
    /// A file holding the daemon's CURVE secret key in Z85 (40 characters), mode 0600.
    /// Created on first start if missing (and the public key printed).
    pub secret_key_file: Option<PathBuf>,
    /// A file of allowed client public keys, one Z85 key per line (`#` comments).
    pub allowed_clients_file: Option<PathBuf>,
    /// Allowed client public keys in Z85.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
}

impl fmt::Debug for CurveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            secret_key_file,
            allowed_clients_file,
            allowed_clients,
        } = self;
        f.debug_struct("CurveConfig")
            .field("secret_key_file", secret_key_file)
            .field("allowed_clients_file", allowed_clients_file)
            .field("allowed_clients", &allowed_clients.len())
            .finish()
    }
}

/// The config file, as written (`cloakroomd.toml.sample` documents every key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) bind: Option<Vec<String>>,
    pub(crate) store: Option<String>,
    pub(crate) events: Option<String>,
    pub(crate) metrics: Option<String>,
    pub(crate) socket_group: Option<String>,
    pub(crate) cache_size: Option<usize>,
    pub(crate) cookie_name: Option<String>,
    pub(crate) curve: Option<CurveConfig>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let text = read_file(path, "config file")?;
        Self::parse(&text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("config file {}: {}", path.display(), one_line(&e)),
            )
        })
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Reads a file the configuration names; `what` names it in the error ("config file").
pub(crate) fn read_file(path: &Path, what: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot read {what} {}", path.display()),
        )
        .with_source(e)
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Everything a daemon is started with. [`Config::new`] gives the defaults for a data
/// directory; set fields to change them. The binary builds one from its flags and config
/// file ([`crate::Args::config`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where `keys.toml`, the default socket and the default SQLite file live; created
    /// (mode 0700) if missing.
    pub data_dir: PathBuf,
    /// The request endpoints (ROUTER). Empty means `ipc://<data_dir>/cloakroomd.sock`.
    /// `tcp://HOST:*` binds a free port; [`crate::Running::endpoints`] tells which.
    pub bind: Vec<String>,
    /// The store URL; `None` means `sqlite://<data_dir>/sessions.db`.
    pub store: Option<String>,
    /// The revocation feed endpoint (PUB); `None` means `ipc://<data_dir>/events.sock`.
    pub events: Option<String>,
    /// The loopback address of the metrics HTTP endpoint; `None`: no metrics listener.
    pub metrics: Option<SocketAddr>,
    /// The group ipc socket files are given (mode 0660); `None`: mode 0600.
    pub socket_group: Option<String>,
    /// Sessions the cache keeps; 0 turns it off. `None`: [`DEFAULT_CACHE_SIZE`] for stores
    /// only this daemon writes (`sqlite`, `file`, an in-process store), 0 for network
    /// stores several daemons may share (`redis`, `postgres`, `memcache`).
    pub cache_size: Option<usize>,
    /// The name of the session cookie the cookie verbs mint and open, which is also the
    /// tokens' purpose: the name the applications' Rust layers use (a cookie minted for one
    /// name never opens under another). `None`: `__Host-session`.
    pub cookie_name: Option<String>,
    /// CURVE, required for any non-loopback tcp endpoint.
    pub curve: Option<CurveConfig>,
    /// A store to use instead of opening `store` (in-process tests).
    pub store_instance: Option<Arc<dyn Store>>,
    /// The clock of the cookie verbs (in-process tests); `None`: the system clock.
    pub clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            data_dir,
            bind,
            store,
            events,
            metrics,
            socket_group,
            cache_size,
            cookie_name,
            curve,
            store_instance,
            clock,
        } = self;
        f.debug_struct("Config")
            .field("data_dir", data_dir)
            .field("bind", bind)
            // A store URL may hold a password: the scheme only.
            .field(
                "store",
                &store
                    .as_deref()
                    .map(|s| s.split(':').next().unwrap_or_default()),
            )
            .field("events", events)
            .field("metrics", metrics)
            .field("socket_group", socket_group)
            .field("cache_size", cache_size)
            .field("cookie_name", cookie_name)
            .field("curve", curve)
            .field("store_instance", &store_instance.is_some())
            .field("clock", clock)
            .finish()
    }
}

impl Config {
    /// The defaults, with `data_dir` as the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bind: Vec::new(),
            store: None,
            events: None,
            metrics: None,
            socket_group: None,
            cache_size: None,
            cookie_name: None,
            curve: None,
            store_instance: None,
            clock: None,
        }
    }

    /// The request endpoints, defaults applied.
    pub fn bind_endpoints(&self) -> Vec<String> {
        if self.bind.is_empty() {
            vec![format!(
                "ipc://{}",
                self.data_dir.join("cloakroomd.sock").display()
            )]
        } else {
            self.bind.clone()
        }
    }

    /// The feed endpoint, default applied.
    pub fn events_endpoint(&self) -> String {
        self.events
            .clone()
            .unwrap_or_else(|| format!("ipc://{}", self.data_dir.join("events.sock").display()))
    }

    /// The store URL, default applied.
    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("sessions.db").display()))
    }

    /// The key ring file: `<data_dir>/keys.toml`.
    pub fn keys_file(&self) -> PathBuf {
        self.data_dir.join("keys.toml")
    }

    /// The session cookie's name, default applied.
    pub fn cookie_name(&self) -> &str {
        self.cookie_name
            .as_deref()
            .unwrap_or(cloakroom::DEFAULT_COOKIE_NAME)
    }

    /// The cache size, default applied for the store in use.
    pub fn effective_cache_size(&self) -> usize {
        if let Some(n) = self.cache_size {
            return n;
        }
        if self.store_instance.is_some() {
            return DEFAULT_CACHE_SIZE;
        }
        let url = self.store_url();
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" | "file" => DEFAULT_CACHE_SIZE,
            _ => 0,
        }
    }

    /// Applies a config file: each key it sets replaces the default (flags are applied
    /// after it, so they win).
    pub(crate) fn apply_file(&mut self, file: FileConfig) -> Result<(), Error> {
        let FileConfig {
            data_dir,
            bind,
            store,
            events,
            metrics,
            socket_group,
            cache_size,
            cookie_name,
            curve,
        } = file;
        if let Some(d) = data_dir {
            self.data_dir = d;
        }
        if let Some(b) = bind {
            self.bind = b;
        }
        self.store = store.or(self.store.take());
        self.events = events.or(self.events.take());
        if let Some(m) = metrics {
            self.metrics = Some(parse_metrics(&m)?);
        }
        self.socket_group = socket_group.or(self.socket_group.take());
        self.cache_size = cache_size.or(self.cache_size);
        self.cookie_name = cookie_name.or(self.cookie_name.take());
        self.curve = curve.or(self.curve.take());
        Ok(())
    }
}

/// Reads a metrics address: `HOST:PORT` on loopback only (the metrics are not
/// authenticated).
pub(crate) fn parse_metrics(text: &str) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!("metrics address `{text}` is not IP:PORT (e.g. 127.0.0.1:9464)"),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(Error::new(
            ErrorKind::Insecure,
            format!(
                "metrics address {addr} is not loopback; the metrics endpoint has no \
                 authentication, so it listens on 127.0.0.1 or [::1] only (put a proxy in front)"
            ),
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let e = FileConfig::parse("bnid = [\"x\"]\n").unwrap_err();
        assert!(e.contains("bnid"), "{e}");
        let e = FileConfig::parse("[curve]\nsecret = \"x\"\n").unwrap_err();
        assert!(e.contains("secret"), "{e}");
    }

    #[test]
    fn the_sample_config_parses() {
        let text = include_str!("../cloakroomd.toml.sample");
        // Every line of the sample that sets a key, uncommented, must parse too.
        FileConfig::parse(text).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = ") || l.starts_with('['))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let file = FileConfig::parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(file.curve.is_some());
        assert!(file.bind.is_some());
    }

    #[test]
    fn defaults_follow_the_data_dir() {
        let c = Config::new("/var/db/cloakroom");
        assert_eq!(
            c.bind_endpoints(),
            ["ipc:///var/db/cloakroom/cloakroomd.sock"]
        );
        assert_eq!(c.events_endpoint(), "ipc:///var/db/cloakroom/events.sock");
        assert_eq!(c.store_url(), "sqlite:///var/db/cloakroom/sessions.db");
        assert_eq!(c.effective_cache_size(), DEFAULT_CACHE_SIZE);
        let mut c = c;
        c.store = Some("redis://127.0.0.1:6379".into());
        assert_eq!(c.effective_cache_size(), 0);
    }

    #[test]
    fn metrics_only_on_loopback() {
        assert!(parse_metrics("127.0.0.1:9464").is_ok());
        assert_eq!(
            parse_metrics("0.0.0.0:9464").unwrap_err().kind(),
            ErrorKind::Insecure
        );
        assert_eq!(
            parse_metrics("localhost").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
