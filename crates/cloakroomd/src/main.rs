//! `cloakroomd`: see `cloakroomd --help`, docs/daemon.md and the library's docs.

use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let args = cloakroomd::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloakroomd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloakroomd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(args: cloakroomd::Args) -> Result<(), cloakroomd::Error> {
    let config = args.config()?;
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = signals else {
        eprintln!("cloakroomd: cannot install signal handlers");
        std::process::exit(1);
    };
    let daemon = cloakroomd::start(config).await?;
    for ep in daemon.endpoints() {
        eprintln!("cloakroomd: serving CRP1 on {ep}");
    }
    eprintln!(
        "cloakroomd: revocation feed on {}",
        daemon.events_endpoint()
    );
    if let Some(addr) = daemon.metrics_addr() {
        eprintln!("cloakroomd: metrics on http://{addr}/metrics");
    }
    loop {
        tokio::select! {
            _ = hup.recv() => match daemon.reload_keys() {
                Ok(()) => eprintln!("cloakroomd: SIGHUP: key ring reloaded"),
                Err(e) => eprintln!("cloakroomd: SIGHUP: keeping the old key ring: {e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!("cloakroomd: stopping");
    daemon.shutdown().await;
    Ok(())
}
