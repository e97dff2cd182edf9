//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tamper-proof session tokens and key rings.
///
/// Keys are read from --keys FILE, else the file named by CLOAKROOM_KEYS_FILE, else the TOML
/// in CLOAKROOM_KEYS (for containers), else ./keys.toml. A key file must have mode 0600.
///
/// Exit codes: 0 success, 1 a token that is invalid or expired, 2 a usage or configuration
/// error.
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

fn parse_ttl(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write a duration such as 30s, 30m, 12h or 7days)"))?;
    match d.as_secs() {
        0 => Err("a token must live at least one second".into()),
        s => Ok(s),
    }
}
