//! The `cloakroom` command line: the operator's view of any session store (find, show and
//! end sessions, revoke users, purge, stats, benchmarks), key rings and tokens from the
//! shell, and other frameworks' session cookies imported into Cloakroom sessions.
//!
//! Every decision lives here so tests can reach it; `main.rs` only calls [`main`].
//!
//! Exit codes: 0 success, 1 a token that is invalid or expired or no session matching, 2 a
//! usage or configuration error (bad flags, a missing or unsafe key file, an unknown or
//! unreachable store, an ambiguous prefix), 130 a purge stopped by Ctrl-C. No input makes it
//! panic.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod bench;
mod cli;
mod dev;
mod import;
mod keys;
mod purge;
mod sessions;
mod store;
mod table;
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
/// Exit code for a purge stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Why a command failed, and so which exit code it gets.
#[derive(Debug)]
pub enum Failure {
    /// The token did not open: `invalid` or `expired`, printed alone on stderr, exit 1.
    Rejected(cloakroom_token::ErrorKind),
    /// Nothing matched (no session with that prefix): the message on stderr, exit 1.
    NotFound(String),
    /// Ctrl-C stopped the command after it reported what it did: exit 130.
    Interrupted,
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
        Err(Failure::NotFound(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_REJECTED)
        }
        Err(Failure::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
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
        Command::Hmac {
            key,
            key_file,
            message,
        } => tokens::hmac(key.as_deref(), key_file.as_deref(), &message),
        Command::Sessions(command) => sessions::sessions(command),
        Command::Users(command) => sessions::users(command),
        Command::Stats { store, json } => sessions::stats(&store, json),
        Command::Purge { store, batch, json } => purge::purge(&store, batch, json),
        Command::Bench(command) => bench::bench(command),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let shell = match shell {
                cli::Shell::Bash => clap_complete::Shell::Bash,
                cli::Shell::Zsh => clap_complete::Shell::Zsh,
                cli::Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "cloakroom", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Dev(command) => dev::dev(command),
    }
}
