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
    Check(CheckArgs),
    Api(ApiArgs),
    Domain(DomainArgs),
    Certs(CertsArgs),
    Doctor(DoctorArgs),
    Mock(MockArgs),
    Usage(UsageArgs),
    Reload(ReloadArgs),
}

fn default_config() -> PathBuf {
    PathBuf::from("config.yaml")
}

/// Run the proxy (the default when no command is given).
#[derive(FromArgs, Debug, Default, Clone)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// config file (default: ./config.yaml); paths inside it are relative to its folder
    #[argh(option, short = 'c', default = "default_config()")]
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
            config: default_config(),
            ..ServeArgs::default()
        }
    }
}

/// Validate a config file and its certificate files without starting; list every problem.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// config file (default: ./config.yaml)
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
}

/// Manage the backend entries (apis) of the config file.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "api")]
pub struct ApiArgs {
    /// config file (default: ./config.yaml); also accepted after the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    #[argh(subcommand)]
    pub action: ApiAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ApiAction {
    List(ApiList),
    Add(ApiAdd),
    Update(ApiUpdate),
    Remove(ApiRemove),
    Enable(ApiEnable),
    Disable(ApiDisable),
}

/// List the entries, numbered from 1.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ApiList {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Add an entry.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
pub struct ApiAdd {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// unique name, used in logs and errors
    #[argh(option)]
    pub name: String,
    /// backend base URL, e.g. https://api.deepseek.com
    #[argh(option)]
    pub endpoint: String,
    /// the model id clients ask for ("*" for every other model)
    #[argh(option)]
    pub custom_model_id: String,
    /// the model id sent to the backend (default: the client's, unchanged)
    #[argh(option)]
    pub target_model_id: Option<String>,
    /// null, true or false: force streaming towards the backend
    #[argh(option)]
    pub stream_mode: Option<String>,
    /// share of the pool's requests (default 1)
    #[argh(option)]
    pub weight: Option<u32>,
    /// environment variable holding the backend's API key
    #[argh(option)]
    pub api_key_env: Option<String>,
    /// add it switched off
    #[argh(switch)]
    pub inactive: bool,
}

/// Change the given fields of an entry, and only those.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "update")]
pub struct ApiUpdate {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the entry: its name, or its number as `api list` shows it
    #[argh(positional)]
    pub entry: String,
    /// new name
    #[argh(option)]
    pub name: Option<String>,
    /// new endpoint
    #[argh(option)]
    pub endpoint: Option<String>,
    /// new client-side model id
    #[argh(option)]
    pub custom_model_id: Option<String>,
    /// new backend model id
    #[argh(option)]
    pub target_model_id: Option<String>,
    /// null, true or false (null puts it back to "as the client asks")
    #[argh(option)]
    pub stream_mode: Option<String>,
    /// new weight
    #[argh(option)]
    pub weight: Option<u32>,
    /// environment variable holding the backend's API key
    #[argh(option)]
    pub api_key_env: Option<String>,
}

/// Remove an entry.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct ApiRemove {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the entry: its name, or its number as `api list` shows it
    #[argh(positional)]
    pub entry: String,
}

/// Switch an entry on.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "enable")]
pub struct ApiEnable {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the entry: its name, or its number as `api list` shows it
    #[argh(positional)]
    pub entry: String,
    /// switch every other entry off (the original's `activate`)
    #[argh(switch)]
    pub only: bool,
}

/// Switch an entry off.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "disable")]
pub struct ApiDisable {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the entry: its name, or its number as `api list` shows it
    #[argh(positional)]
    pub entry: String,
}

/// Change the domain the proxy answers as, and issue its certificate.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "domain")]
pub struct DomainArgs {
    /// config file (default: ./config.yaml); also accepted after the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    #[argh(subcommand)]
    pub action: DomainAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum DomainAction {
    Set(DomainSet),
}

/// Set `domain` and issue a certificate for it from the existing CA.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set")]
pub struct DomainSet {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// the new host name, e.g. api.openai.com
    #[argh(positional)]
    pub name: String,
}

/// Certificates: with no action, create what is missing.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "certs")]
pub struct CertsArgs {
    /// config file (default: ./config.yaml); also accepted after the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    #[argh(subcommand)]
    pub action: Option<CertsAction>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum CertsAction {
    Renew(CertsRenew),
    NewCa(CertsNewCa),
    Show(CertsShow),
    TrustHelp(CertsTrustHelp),
}

/// Issue a new server certificate from the existing CA.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "renew")]
pub struct CertsRenew {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Replace the CA (every client must then trust the new one) and issue a new certificate.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "new-ca")]
pub struct CertsNewCa {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Show subject, names, validity, fingerprints and days left of the CA and the certificate.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct CertsShow {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Print the steps to trust the CA on Windows, macOS, Linux and Firefox.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "trust-help")]
pub struct CertsTrustHelp {
    /// config file (default: ./config.yaml); also accepted before the action
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Check, from a client machine, that everything between it and the backends works.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "doctor")]
pub struct DoctorArgs {
    /// config file (default: ./config.yaml): domain, port, CA and backends to check
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
    /// the proxy's address, to compare with what `domain` resolves to
    #[argh(option)]
    pub proxy: Option<IpAddr>,
    /// connect to this address instead of resolving `domain` (like curl --resolve)
    #[argh(option)]
    pub resolve: Option<IpAddr>,
    /// port of the proxy (default: server.port)
    #[argh(option)]
    pub port: Option<u16>,
    /// API key to try against backends without their own api_key
    #[argh(option)]
    pub api_key: Option<String>,
}

/// Run a built-in OpenAI-compatible backend that answers without any key or cost.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "mock")]
pub struct MockArgs {
    /// listen where this config file's first local http:// endpoint points (instead of --port)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// port to listen on (default 8000)
    #[argh(option)]
    pub port: Option<u16>,
    /// address to listen on (default 127.0.0.1)
    #[argh(option, default = "IpAddr::from([127, 0, 0, 1])")]
    pub bind: IpAddr,
    /// delay before the first byte of each reply, in milliseconds (default 0)
    #[argh(option, default = "0")]
    pub latency_ms: u64,
    /// pace of streamed tokens (default 50; 0 sends them at once)
    #[argh(option, default = "50")]
    pub tokens_per_second: u32,
    /// answer 422 for a chat message field OpenAI does not define, as Mistral and Cerebras do
    #[argh(switch)]
    pub strict: bool,
}

/// Print the token usage the proxy recorded (usage.tsv in the certificate folder), per day
/// (UTC) and in total, grouped by model, key name or backend.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "usage")]
pub struct UsageArgs {
    /// config file (default: ./config.yaml): its certificate folder holds usage.tsv
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
    /// days to show, today included (default 30)
    #[argh(option, default = "30")]
    pub days: u32,
    /// group by model (the default), key or backend
    #[argh(option, default = "String::from(\"model\")")]
    pub by: String,
}

/// Make the running proxy read its config file again (as SIGHUP does), through its admin
/// listener on this machine; works on every OS.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reload")]
pub struct ReloadArgs {
    /// config file (default: ./config.yaml): the one the proxy runs with; its
    /// server.admin_bind says where to ask
    #[argh(option, short = 'c', default = "default_config()")]
    pub config: PathBuf,
}

/// The config file of a command whose `--config` may come before or after its action
/// (`api --config F list` and `api list --config F`): the one given, or ./config.yaml. Given in
/// both places, it must name the same file.
fn either_config(before: Option<&PathBuf>, after: Option<&PathBuf>) -> Result<PathBuf, String> {
    match (before, after) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "--config given twice, as {} and {}",
            a.display(),
            b.display()
        )),
        (Some(path), _) | (None, Some(path)) => Ok(path.clone()),
        (None, None) => Ok(default_config()),
    }
}

impl ApiArgs {
    pub fn config(&self) -> Result<PathBuf, String> {
        let after = match &self.action {
            ApiAction::List(a) => &a.config,
            ApiAction::Add(a) => &a.config,
            ApiAction::Update(a) => &a.config,
            ApiAction::Remove(a) => &a.config,
            ApiAction::Enable(a) => &a.config,
            ApiAction::Disable(a) => &a.config,
        };
        either_config(self.config.as_ref(), after.as_ref())
    }
}

impl DomainArgs {
    pub fn config(&self) -> Result<PathBuf, String> {
        let DomainAction::Set(set) = &self.action;
        either_config(self.config.as_ref(), set.config.as_ref())
    }
}

impl CertsArgs {
    pub fn config(&self) -> Result<PathBuf, String> {
        let after = match &self.action {
            None => &None,
            Some(CertsAction::Renew(a)) => &a.config,
            Some(CertsAction::NewCa(a)) => &a.config,
            Some(CertsAction::Show(a)) => &a.config,
            Some(CertsAction::TrustHelp(a)) => &a.config,
        };
        either_config(self.config.as_ref(), after.as_ref())
    }
}
