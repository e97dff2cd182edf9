//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Sessions on any store (find, end, revoke, purge, count), tamper-proof tokens and key
/// rings, and Flask, Pyramid, Django and Rails session cookies turned into Cloakroom sessions.
///
/// Every session command takes --store URL (or CLOAKROOM_STORE): sqlite://PATH (default
/// sqlite://./cloakroom-data/sessions.db, the daemon's default file), file://DIR,
/// redis://HOST:PORT/DB (rediss:// for TLS), postgres://USER@HOST:PORT/DB,
/// memcache://HOST:PORT, cloakroomd+ipc://PATH, cloakroomd+tcp://HOST:PORT. memcached cannot
/// list its sessions, so only `users revoke` and `purge` work on it.
///
/// To end every session of a user: `cloakroom sessions list --user alice`, then `cloakroom
/// users revoke alice` (all of them) or `cloakroom sessions end PREFIX` (one).
///
/// Keys are read from --keys FILE, else the file named by CLOAKROOM_KEYS_FILE, else the TOML
/// in CLOAKROOM_KEYS (for containers), else ./keys.toml. A key file must have mode 0600.
///
/// Exit codes: 0 success, 1 a token or legacy cookie that is invalid or expired, or no
/// session matches, 2 a usage or configuration error (an unknown store scheme, a store that
/// cannot be reached, an ambiguous prefix, a missing --user-field), 130 a purge stopped by
/// Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "cloakroom", version, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new key ring (one random 256-bit key, `k1`) with mode 0600.
    ///
    /// Refuses to replace an existing file unless --force is given; with --force the new ring
    /// replaces the old one atomically, and every token the old ring minted stops opening.
    Keygen {
        /// Where to write the key ring.
        #[arg(long, default_value = "keys.toml", value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file (all tokens minted with it become invalid).
        #[arg(long)]
        force: bool,
    },
    /// Add a new random primary key; older keys stay in the ring so their tokens still open.
    ///
    /// Remove an old key from the file by hand once the last token it minted has expired.
    Rotate {
        /// The key ring file to rotate (default: CLOAKROOM_KEYS_FILE, else ./keys.toml).
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
    },
    /// Mint a token for DATA (or standard input with `-`) and print it.
    Sign(SignArgs),
    /// Open a token: print its payload, or print `invalid` / `expired` to stderr and exit 1.
    Open(OpenArgs),
    /// Show a token's kind, key id and (for signed tokens) its claimed times and payload,
    /// without a key.
    ///
    /// It never says a token is valid: anyone can write a token that inspects well. Use
    /// `cloakroom open` to verify.
    Inspect {
        /// The token, or `-` to read it from standard input.
        token: String,
    },
    /// Open a Flask, Pyramid, Django or Rails session cookie and print it as JSON; with
    /// --store, also create a Cloakroom session for its user and print its cookie.
    ///
    /// Reads Flask (itsdangerous), Pyramid (SignedCookieSessionFactory), Django
    /// (signed_cookies) and Rails 6.1/7.2 (encrypted cookie store) cookies with the app's
    /// secret, by the framework's own rules, expiry included. Prints `invalid` or `expired` to
    /// stderr and exits 1 when the cookie does not open. Serializers that run code on load
    /// (pickle, Marshal) are refused.
    ///
    /// Output (stdout, one JSON object): `framework`, `data`, `issued_at`, `accessed_at`,
    /// `expires_at`. With --store URL it also creates a server-mode Cloakroom session in that
    /// store (any --store URL of the session commands), logged in as the value of --user-field (default `user_id`; a
    /// string or a number), signed with the key ring (--keys, else CLOAKROOM_KEYS_FILE, else
    /// CLOAKROOM_KEYS, else ./keys.toml), and adds `"cloakroom": {"cookie_name", "cookie",
    /// "user_id", "max_age"}`; `jq -r .cloakroom.cookie` gives the new cookie's value. A
    /// session without that field, or a store scheme other than `sqlite:`, exits 2.
    ///
    /// Example: cloakroom import --from django --secret-file django.secret --store
    /// sqlite:/var/lib/app/sessions.db --user-field _auth_user_id "$COOKIE"
    Import(ImportArgs),
    /// Print HMAC-SHA256(KEY, MESSAGE) in hex, for comparing with other tools.
    ///
    /// The key comes from --key-file FILE, else --key, else standard input (a key in argv
    /// shows in `ps`; prefer the file or stdin). One trailing newline of a file or stdin is
    /// not part of the key.
    ///
    /// Example: `printf SEEKRIT | cloakroom hmac 'Hello World'` prints
    /// e655f98cb9b3c02f45576f7906d64b0b7f8731f25a5319c42ca666917aca45a4.
    Hmac {
        /// The key, as text (UTF-8 bytes). Visible to other users in `ps`: prefer --key-file
        /// or standard input.
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// Read the key from this file.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// The message, as text (UTF-8 bytes).
        message: String,
    },
    /// Find, show and end sessions (by user, or by a prefix of their id hash).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// End every session of a user.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Count the store's live sessions and the expired ones not yet purged, and its size
    /// where the store can tell (SQLite, file, Redis, PostgreSQL; not memcached).
    Stats {
        /// The store.
        #[command(flatten)]
        store: StoreArg,
        /// Print one JSON object: {"store", "live", "expired_not_purged", "bytes"}.
        #[arg(long)]
        json: bool,
    },
    /// Remove expired sessions, one batch (one short transaction) at a time, with a progress
    /// bar on a terminal.
    ///
    /// Safe beside a running daemon or app: each batch takes the store's write lock briefly,
    /// and only sessions already expired are removed. Ctrl-C stops after the current batch
    /// and prints how many were removed (exit 130). Prints `purged N expired sessions in T s`
    /// (or JSON with --json: {"purged", "seconds", "interrupted"}).
    Purge {
        /// The store.
        #[command(flatten)]
        store: StoreArg,
        /// How many sessions one batch removes.
        #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        batch: u64,
        /// Print one JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Measure: the token codec (against Python's itsdangerous and Django when available),
    /// a store, or the daemon. Prints ops/s and latency percentiles (p50, p99, p99.9).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a shell completion script: `cloakroom completions bash >
    /// /etc/bash_completion.d/cloakroom`.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Print the man page (roff): `cloakroom man > cloakroom.1`.
    Man,
    /// Developer tools (hidden): fill a store with sessions for tests and benchmarks.
    #[command(subcommand, hide = true)]
    Dev(DevCommand),
}

/// The shells `cloakroom completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// The store a session command works on.
#[derive(Debug, Clone, Args)]
pub struct StoreArg {
    /// The store's URL: sqlite://PATH, file://DIR, redis://…, rediss://…, postgres://…,
    /// memcache://HOST:PORT, cloakroomd+ipc://PATH, cloakroomd+tcp://HOST:PORT.
    #[arg(
        long = "store",
        env = "CLOAKROOM_STORE",
        value_name = "URL",
        default_value = "sqlite://./cloakroom-data/sessions.db"
    )]
    pub url: String,
}

/// `cloakroom sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a user's live sessions: id-hash prefix, created, last seen, expires, device
    /// label, user agent (times in UTC).
    List {
        /// The user id, as the app logged it in.
        #[arg(long)]
        user: String,
        /// The store.
        #[command(flatten)]
        store: StoreArg,
        /// Print a JSON array of objects: {"id_hash", "user_id", "created", "last_seen",
        /// "idle_deadline", "absolute_deadline", "expires", "device_label", "user_agent",
        /// "ip"} (times in unix seconds).
        #[arg(long)]
        json: bool,
    },
    /// Show one live session, found by a prefix of its id hash (as `sessions list` prints
    /// it). Data keys are listed, their values are not (they may hold secrets).
    Show {
        /// A prefix of the session's id hash: 1 to 64 hex digits.
        prefix: String,
        /// The store.
        #[command(flatten)]
        store: StoreArg,
        /// Print one JSON object (as `sessions list --json`, plus "version" and "data_keys").
        #[arg(long)]
        json: bool,
    },
    /// End one session, found by a prefix of its id hash. A prefix that matches several
    /// sessions is refused, listing them.
    End {
        /// A prefix of the session's id hash: 1 to 64 hex digits.
        prefix: String,
        /// The store.
        #[command(flatten)]
        store: StoreArg,
    },
}

/// `cloakroom users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// End every session of USER (password change, account lock) and print how many ended.
    ///
    /// Bumps the user's epoch too, so client-mode and hybrid cookies of the user die as
    /// well. With --except PREFIX the one session keeps working, and the epoch is left alone
    /// (bumping it would end that session too).
    Revoke {
        /// The user id.
        user: String,
        /// Keep this session of the user (a prefix of its id hash).
        #[arg(long, value_name = "PREFIX")]
        except: Option<String>,
        /// The store.
        #[command(flatten)]
        store: StoreArg,
    },
}

/// `cloakroom bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sign and verify Cloakroom tokens; also runs the same loop in Python's itsdangerous
    /// and Django's signing (when --python has them) and prints the ratios.
    Tokens {
        /// How many sign+verify pairs.
        #[arg(long, default_value_t = 200_000)]
        iterations: u64,
        /// The Python interpreter for the side-by-side run (default: CLOAKROOM_PYTHON, else
        /// ./target/venv/bin/python if it exists, else python3). `none` skips it.
        #[arg(long, value_name = "PATH")]
        python: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Create, load and update sessions in the store at URL (it creates its own sessions and
    /// deletes them after).
    Store {
        /// The store's URL (as --store).
        url: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// The same through the daemon at ENDPOINT (ipc://PATH or tcp://HOST:PORT).
    Daemon {
        /// The daemon's ZeroMQ endpoint.
        endpoint: String,
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// The load `bench store` and `bench daemon` put on a store.
#[derive(Debug, Clone, Copy, Args)]
pub struct LoadArgs {
    /// How many sessions (each is created, loaded, applied to and deleted).
    #[arg(long, default_value_t = 5_000)]
    pub iterations: u64,
    /// How many requests run at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `cloakroom dev …` (hidden).
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Create COUNT sessions for USER (all expired with --expired), fast: SQLite gets them
    /// in one transaction.
    Fill {
        /// How many sessions.
        #[arg(long)]
        count: u64,
        /// The user they belong to (none: anonymous sessions).
        #[arg(long)]
        user: Option<String>,
        /// Make them expired an hour ago.
        #[arg(long)]
        expired: bool,
        /// The device label to give them.
        #[arg(long)]
        label: Option<String>,
        /// The store.
        #[command(flatten)]
        store: StoreArg,
    },
}

/// Where the key ring comes from, shared by the token commands.
#[derive(Debug, Args)]
pub struct KeySource {
    /// Key ring file (default: CLOAKROOM_KEYS_FILE, else CLOAKROOM_KEYS, else ./keys.toml).
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Pretend the time is this many seconds since 1970 (for tests and replaying logs).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
}

/// Arguments of `cloakroom sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The context the token is bound to, usually the cookie name; a token minted for one
    /// purpose never opens for another.
    #[arg(long)]
    pub purpose: String,
    /// How long the token lives, e.g. 30s, 30m, 12h, 7days.
    #[arg(long, default_value = "30m", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Encrypt the payload too (XChaCha20-Poly1305) instead of only signing it.
    #[arg(long)]
    pub sealed: bool,
    /// The payload, or `-` to read bytes from standard input.
    pub data: String,
    /// Where the keys come from.
    #[command(flatten)]
    pub source: KeySource,
}

/// Arguments of `cloakroom open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The purpose the token was minted for.
    #[arg(long)]
    pub purpose: String,
    /// The token, or `-` to read it from standard input.
    pub token: String,
    /// Where the keys come from.
    #[command(flatten)]
    pub source: KeySource,
}

/// The frameworks `cloakroom import --from` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Framework {
    /// Flask (itsdangerous, `session` cookie).
    Flask,
    /// Pyramid (SignedCookieSessionFactory).
    Pyramid,
    /// Django (signed_cookies session engine).
    Django,
    /// Rails (encrypted cookie store).
    Rails,
}

/// `--rails-version`: the key derivation of Rails' `load_defaults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RailsVersionArg {
    /// 6.1: PBKDF2-SHA1.
    #[value(name = "6.1")]
    V6_1,
    /// 7.0 and later (7.2): PBKDF2-SHA256.
    #[value(name = "7.2")]
    V7_2,
}

/// Arguments of `cloakroom import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The framework that made the cookie.
    #[arg(long, value_enum)]
    pub from: Framework,
    /// A file holding the app's secret (Flask SECRET_KEY, Pyramid secret, Django SECRET_KEY,
    /// Rails secret_key_base); one trailing newline is ignored. Mode 0600 required.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// The framework's salt, when the app changed the default.
    #[arg(long)]
    pub salt: Option<String>,
    /// Maximum age in seconds (Flask PERMANENT_SESSION_LIFETIME, Django SESSION_COOKIE_AGE,
    /// Pyramid timeout); the framework's default when absent.
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Rails only: the key derivation of `load_defaults` (6.1: PBKDF2-SHA1, 7.2: PBKDF2-SHA256).
    #[arg(long, value_enum, default_value_t = RailsVersionArg::V7_2)]
    pub rails_version: RailsVersionArg,
    /// Rails only: the session cookie's name, which Rails binds into the encryption.
    #[arg(long, default_value = "_app_session")]
    pub cookie_name: String,
    /// Pretend the time is this many seconds since 1970 when checking the legacy cookie's
    /// expiry (a --store session is always created at the real time).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
    /// Also create the Cloakroom session in this store and print its cookie: sqlite:PATH
    /// (created if missing), file://DIR, redis://…, postgres://…, memcache://…,
    /// cloakroomd+ipc://PATH, cloakroomd+tcp://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// With --store: the key ring that signs the new cookie (default: CLOAKROOM_KEYS_FILE,
    /// else CLOAKROOM_KEYS, else ./keys.toml). Use the service's own ring.
    #[arg(long, value_name = "FILE", requires = "store")]
    pub keys: Option<PathBuf>,
    /// With --store: the top-level session field holding the user id (a string or a
    /// number), e.g. `_auth_user_id` for Django, `_user_id` for Flask-Login.
    #[arg(long, value_name = "NAME", default_value = "user_id")]
    pub user_field: String,
    /// With --store: the Cloakroom cookie's name, which the token is bound to; the same as
    /// the service's SessionLayer.
    #[arg(long, value_name = "NAME", default_value = "__Host-session")]
    pub cloakroom_cookie_name: String,
    /// With --store: the idle timeout of the new session (the service's Policy).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_ttl)]
    pub idle: u64,
    /// With --store: the absolute lifetime of the new session (the service's Policy).
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = parse_ttl)]
    pub absolute: u64,
    /// The cookie value, or `-` to read it from standard input.
    pub cookie: String,
}

fn parse_ttl(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write a duration such as 30s, 30m, 12h or 7days)"))?;
    match d.as_secs() {
        0 => Err("a token must live at least one second".into()),
        s => Ok(s),
    }
}
