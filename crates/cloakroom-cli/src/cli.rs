//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tamper-proof session tokens and key rings, and Flask, Pyramid, Django and Rails session
/// cookies turned into Cloakroom sessions.
///
/// Keys are read from --keys FILE, else the file named by CLOAKROOM_KEYS_FILE, else the TOML
/// in CLOAKROOM_KEYS (for containers), else ./keys.toml. A key file must have mode 0600.
///
/// Exit codes: 0 success, 1 a token or legacy cookie that is invalid or expired, 2 a usage or
/// configuration error (including an unsupported --store or a missing --user-field).
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
    /// `expires_at`. With --store sqlite:PATH it also creates a server-mode Cloakroom session
    /// in that SQLite file, logged in as the value of --user-field (default `user_id`; a
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
    /// Example: `cloakroom hmac --key SEEKRIT 'Hello World'` prints
    /// e655f98cb9b3c02f45576f7906d64b0b7f8731f25a5319c42ca666917aca45a4.
    Hmac {
        /// The key, as text (UTF-8 bytes).
        #[arg(long)]
        key: String,
        /// The message, as text (UTF-8 bytes).
        message: String,
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

/// Arguments of `cloakroom import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The framework that made the cookie.
    #[arg(long, value_parser = ["flask", "pyramid", "django", "rails"])]
    pub from: String,
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
    #[arg(long, default_value = "7.2", value_parser = ["6.1", "7.2"])]
    pub rails_version: String,
    /// Rails only: the session cookie's name, which Rails binds into the encryption.
    #[arg(long, default_value = "_app_session")]
    pub cookie_name: String,
    /// Pretend the time is this many seconds since 1970 when checking the legacy cookie's
    /// expiry (a --store session is always created at the real time).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,
    /// Also create the Cloakroom session in this store and print its cookie. Supported:
    /// `sqlite:PATH` (the SQLite file the service's SqliteStore uses; created if missing).
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
