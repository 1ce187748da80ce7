//! trae-proxy: a TLS-terminating OpenAI API proxy that maps model ids to any OpenAI-compatible
//! backend and relays streams token by token.

// The program: start-up, the running configuration, signals, the admin listener, commands.
mod admin;
mod bookkeeping;
mod cli;
mod cmd;
mod live;
mod serve;
mod signals;
mod status;

// The layers below it, top to bottom (tests/layers.rs holds them to it).
mod api;
mod pki;
mod server;
mod upstream;

mod config;

// Small pieces every layer may use.
mod api_error;
mod cidr;
mod error;
mod files;
mod json;
mod logging;
mod metrics;
mod output;
mod usage;

use std::process::ExitCode;

use cli::{Cli, Command};

// Workers keep the small blocks they free (thread-cache/): musl's malloc takes one global lock
// per call, which cost the static build a third of its throughput. The same on every build, so
// the tests exercise what ships.
#[global_allocator]
static ALLOCATOR: thread_cache::ThreadCache = thread_cache::ThreadCache;

/// Exit code for a command line that could not be parsed (0 and 1 are success and failure).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ error::Error::Usage(_)) => {
            output::complain(format_args!("trae-proxy: {e}"));
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            output::complain(format_args!("trae-proxy: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// argh's own `from_env` exits with 1 on a usage error; we keep 1 for failures and use 2.
fn parse_args() -> Result<Cli, ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let command = args
        .first()
        .map_or("trae-proxy", |a| a.rsplit('/').next().unwrap_or(a));
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    <Cli as argh::FromArgs>::from_args(&[command], &rest).map_err(|exit| match exit.status {
        Ok(()) => {
            output::line(format_args!("{}", exit.output));
            ExitCode::SUCCESS
        }
        Err(()) => {
            output::complain(format_args!("{}", exit.output));
            ExitCode::from(EXIT_USAGE)
        }
    })
}

fn run(cli: Cli) -> Result<(), error::Error> {
    if cli.version {
        output::line(format_args!(
            "trae-proxy {} (commit {}, target {})",
            env!("CARGO_PKG_VERSION"),
            env!("TRAE_PROXY_COMMIT"),
            env!("TRAE_PROXY_TARGET")
        ));
        return Ok(());
    }
    match cli.command {
        Some(Command::Serve(args)) => serve::run(&args),
        None => serve::run(&cli::ServeArgs::defaults()),
        Some(Command::Check(args)) => cmd::check::run(&args),
        Some(Command::Api(args)) => cmd::api::run(&args),
        Some(Command::Domain(args)) => cmd::domain::run(&args),
        Some(Command::Certs(args)) => cmd::certs::run(&args),
        Some(Command::Doctor(args)) => cmd::doctor::run(&args),
        Some(Command::Mock(args)) => cmd::mock::run(&args),
        Some(Command::Usage(args)) => cmd::usage::run(&args),
        Some(Command::Reload(args)) => cmd::reload::run(&args),
    }
}
