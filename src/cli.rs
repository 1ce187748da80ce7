//! The command line, as argh reads it: raw flags only. What they mean is decided elsewhere.

use std::net::IpAddr;
use std::path::PathBuf;

use argh::FromArgs;

/// trae-proxy: an OpenAI API endpoint that forwards each model to the backend you choose.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// print version, git commit and target, then exit
    #[argh(switch)]
    pub version: bool,

    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
}

/// Run the proxy (the default when no command is given).
#[derive(FromArgs, Debug, Default, Clone)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// config file (default: ./config.yaml); paths inside it are relative to its folder
    #[argh(option, short = 'c', default = "PathBuf::from(\"config.yaml\")")]
    pub config: PathBuf,

    /// listen on this port instead of server.port
    #[argh(option)]
    pub port: Option<u16>,

    /// listen on this address instead of server.bind
    #[argh(option)]
    pub bind: Option<IpAddr>,
}

impl ServeArgs {
    pub fn defaults() -> Self {
        ServeArgs {
            config: PathBuf::from("config.yaml"),
            ..ServeArgs::default()
        }
    }
}
