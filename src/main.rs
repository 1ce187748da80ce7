//! trae-proxy: a TLS-terminating OpenAI API proxy that maps model ids to any OpenAI-compatible
//! backend and relays streams token by token.

mod api_error;
mod certs;
mod chat;
mod cli;
mod config;
mod error;
mod files;
mod logging;
mod proxy;
mod route;
mod serve;
mod server;
mod sse;
mod tls;
mod upstream;

use std::process::ExitCode;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trae-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), error::Error> {
    if cli.version {
        println!(
            "trae-proxy {} (commit {}, target {})",
            env!("CARGO_PKG_VERSION"),
            env!("TRAE_PROXY_COMMIT"),
            env!("TRAE_PROXY_TARGET")
        );
        return Ok(());
    }
    match cli.command {
        Some(Command::Serve(args)) => serve::run(&args),
        None => serve::run(&cli::ServeArgs::defaults()),
    }
}
