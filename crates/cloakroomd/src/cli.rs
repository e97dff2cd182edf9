//! The flags of the `cloakroomd` binary.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{parse_metrics, Config, FileConfig, DEFAULT_DATA_DIR};
use crate::error::Error;

/// The Cloakroom session daemon: keeps sessions for application nodes in any language,
/// spoken to over ZeroMQ (protocol CRP1, docs/protocol.md).
///
/// With no flags it serves on `ipc://./cloakroom-data/cloakroomd.sock` from the embedded
/// SQLite store `./cloakroom-data/sessions.db`, creating the directory and a new key ring
/// (`keys.toml`, mode 0600) on first start.
///
/// The config file (TOML) takes the same settings: `data_dir`, `bind` (an array),
/// `store`, `events`, `metrics`, `socket_group`, `cache_size`, `cookie_name` and a `[curve]` table
/// (`secret_key_file`, `allowed_clients_file`, `allowed_clients`); flags override it, and
/// an unknown key is an error. See cloakroomd.toml.sample and docs/daemon.md.
///
/// Signals: SIGHUP reloads the key ring (a bad file is logged and the old ring kept);
/// SIGTERM or SIGINT stops accepting requests, answers those in flight and exits 0.
/// Exit status 2: bad flags or configuration, or a network listener without CURVE.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "cloakroomd", version, about, long_about)]
pub struct Args {
    /// Read settings from this TOML file first (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The data directory: key ring (keys.toml), default socket and SQLite file.
    /// (default: ./cloakroom-data)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where to listen for requests (ROUTER), repeatable: ipc://PATH, tcp://127.0.0.1:PORT,
    /// or tcp on another address with CURVE configured. (default: ipc://DIR/cloakroomd.sock)
    #[arg(long, value_name = "ENDPOINT")]
    pub bind: Vec<String>,

    /// The session store: sqlite://PATH, file://DIR, redis://HOST:PORT/DB,
    /// postgres://USER@HOST:PORT/DB, memcache://HOST:PORT. Several daemons can share a
    /// redis or postgres store. (default: sqlite://DIR/sessions.db)
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,

    /// Where to publish the revocation feed (PUB). (default: ipc://DIR/events.sock)
    #[arg(long, value_name = "ENDPOINT")]
    pub events: Option<String>,

    /// Serve Prometheus metrics over HTTP on this loopback address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// The session cookie's name, which is also the tokens' purpose: set it to the name the
    /// site's Rust layer uses (e.g. cloakroom-session for its plain-http development mode)
    /// so that the cookie verbs open the cookies it mints. (default: __Host-session)
    #[arg(long, value_name = "NAME")]
    pub cookie_name: Option<String>,
}

impl Args {
    /// The configuration these flags give: the config file's settings (if `--config`),
    /// then the flags on top.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for an unreadable config file, an
    /// unknown key or a bad value.
    pub fn config(&self) -> Result<Config, Error> {
        let mut config = Config::new(DEFAULT_DATA_DIR);
        if let Some(path) = &self.config {
            config.apply_file(FileConfig::load(path)?)?;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if !self.bind.is_empty() {
            config.bind = self.bind.clone();
        }
        if let Some(s) = &self.store {
            config.store = Some(s.clone());
        }
        if let Some(e) = &self.events {
            config.events = Some(e.clone());
        }
        if let Some(m) = &self.metrics {
            config.metrics = Some(parse_metrics(m)?);
        }
        if let Some(n) = &self.cookie_name {
            config.cookie_name = Some(n.clone());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/a\"\nbind = [\"tcp://127.0.0.1:5555\"]\nstore = \"redis://127.0.0.1/\"\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "cloakroomd",
            "--config",
            file.to_str().unwrap(),
            "--bind",
            "ipc:///tmp/x.sock",
            "--bind",
            "tcp://127.0.0.1:1",
        ]);
        let c = args.config().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/a"));
        assert_eq!(c.bind, ["ipc:///tmp/x.sock", "tcp://127.0.0.1:1"]);
        assert_eq!(c.store.as_deref(), Some("redis://127.0.0.1/"));
    }

    #[test]
    fn the_cookie_name_defaults_to_the_layers_and_can_be_set() {
        let c = Args::parse_from(["cloakroomd"]).config().unwrap();
        assert_eq!(c.cookie_name(), cloakroom::DEFAULT_COOKIE_NAME);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "cookie_name = \"from-file\"\n").unwrap();
        let args = Args::parse_from(["cloakroomd", "--config", file.to_str().unwrap()]);
        assert_eq!(args.config().unwrap().cookie_name(), "from-file");
        let args = Args::parse_from([
            "cloakroomd",
            "--config",
            file.to_str().unwrap(),
            "--cookie-name",
            "cloakroom-session",
        ]);
        assert_eq!(args.config().unwrap().cookie_name(), "cloakroom-session");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "stor = \"sqlite://x\"\n").unwrap();
        let args = Args::parse_from(["cloakroomd", "--config", file.to_str().unwrap()]);
        let e = args.config().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("stor"), "{e}");
    }
}
