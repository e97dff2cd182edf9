//! `cloakroomd`, the Cloakroom session daemon: one process keeps the sessions of many
//! application nodes, written in any language, which speak CRP1 to it over ZeroMQ
//! (`docs/protocol.md`); the daemon holds the key ring, so applications hold no key.
//!
//! The binary is a thin wrapper around this library: [`Args`] are its flags, [`Config`]
//! what they and the config file say, and [`start`] runs a daemon inside the caller's tokio
//! runtime. Tests of other crates (the remote store, the Python client) start one in
//! process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroomd::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut config = cloakroomd::Config::new(dir.path());
//! config.bind = vec!["tcp://127.0.0.1:*".into()];     // a free port
//! config.events = Some("tcp://127.0.0.1:*".into());
//! let daemon = cloakroomd::start(config).await?;
//! let endpoint = daemon.endpoints()[0].clone();        // "tcp://127.0.0.1:41733"
//! let feed = daemon.events_endpoint().to_owned();      // the revocation feed (PUB)
//! // ... connect DEALER clients to `endpoint`, SUB clients to `feed` ...
//! daemon.shutdown().await;                             // answers what is in flight, then stops
//! # let _ = (endpoint, feed); Ok(()) }
//! ```
//!
//! What a running daemon does (`docs/daemon.md` has the operator's view):
//!
//! - **Requests**: a ROUTER socket on every `bind` endpoint. Each request is decoded with
//!   `cloakroom-proto` and handled on a task of its own, so a slow store call delays no
//!   other request, and a client may keep many in flight. Store verbs go to the store;
//!   cookie verbs (`OPEN`, `LOGIN`, `SET`, ...) to a [`cloakroom::SessionManager`] holding
//!   the daemon's key ring. A message that cannot be answered (no request id) is dropped and
//!   counted; the daemon never panics on input.
//! - **The revocation feed**: a PUB socket publishing a numbered `revoke.session` or
//!   `revoke.user` message for every ended session, revoked user and epoch bump, and a
//!   heartbeat every second ([`cloakroom_proto::FeedMessage`]).
//! - **A cache** of live sessions (bounded), coherent because every write of this daemon
//!   goes through it; off by default for network stores that other daemons share.
//! - **Security**: a non-loopback tcp endpoint needs CURVE with a client allow-list
//!   ([`ErrorKind::Insecure`] otherwise, exit status 2); ipc socket files are made 0600
//!   (0660 with a `socket_group`).
//! - **Signals** (binary): SIGHUP reloads the key ring ([`Running::reload_keys`]), SIGTERM
//!   and SIGINT stop it gracefully ([`Running::shutdown`]).
//! - **Metrics**: Prometheus text on `metrics` (loopback HTTP), see [`Metrics`].
//! - **Logs** (`tracing`) name sessions by their id hash's 8-digit prefix, never an id, a
//!   cookie or a token.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod cache;
mod cli;
mod config;
mod cookie_verbs;
mod daemon;
mod dispatch;
mod endpoint;
mod error;
mod feed;
mod metrics;
mod store_url;

// Starting a daemon, and the handle of a running one.
pub use daemon::{start, Running};
// What a daemon is told: flags, config file, the resulting configuration.
pub use cli::Args;
pub use config::{Config, CurveConfig, DEFAULT_CACHE_SIZE, DEFAULT_DATA_DIR};
// Errors.
pub use error::{Error, ErrorKind};
// What it counts.
pub use metrics::Metrics;
// The bounded cache of live sessions, a store wrapper.
pub use cache::CachedStore;
