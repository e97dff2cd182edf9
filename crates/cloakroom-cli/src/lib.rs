//! The `cloakroom` command line: key rings and tokens from the shell, and other frameworks'
//! session cookies imported into Cloakroom sessions (`cloakroom import --store`).
//!
//! Every decision lives here so tests can reach it; `main.rs` only calls [`main`].
//!
//! Exit codes: 0 success, 1 a token that is invalid or expired, 2 a usage or configuration
//! error (bad flags, a missing or unsafe key file). No input makes it panic.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod cli;
mod import;
mod keys;
mod tokens;

use std::process::ExitCode;

// The parsed command line.
pub use cli::{Cli, Command};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a token (or a legacy cookie) that did not open.
pub const EXIT_REJECTED: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Why a command failed, and so which exit code it gets.
#[derive(Debug)]
pub enum Failure {
    /// The token did not open: `invalid` or `expired`, printed alone on stderr, exit 1.
    Rejected(cloakroom_token::ErrorKind),
    /// Anything else, exit 2, with the error's chain printed.
    Usage(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Usage(e.into())
    }
}

/// Parses the process's arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    use clap::Parser as _;
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Rejected(kind)) => {
            let word = if kind == cloakroom_token::ErrorKind::Expired {
                "expired"
            } else {
                "invalid"
            };
            eprintln!("{word}");
            ExitCode::from(EXIT_REJECTED)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs one parsed command.
///
/// # Errors
/// [`Failure::Rejected`] when a token does not open, [`Failure::Usage`] otherwise.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Keygen { out, force } => keys::keygen(&out, force),
        Command::Rotate { keys } => keys::rotate(keys.as_deref()),
        Command::Sign(args) => tokens::sign(args),
        Command::Open(args) => tokens::open(args),
        Command::Inspect { token } => tokens::inspect(&token),
        Command::Import(args) => import::import(args),
        Command::Hmac { key, message } => tokens::hmac(&key, &message),
    }
}
