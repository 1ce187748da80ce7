//! `trae-proxy reload`: asks the running proxy to read its config file again, by `POST
//! /reload` to its admin listener on this machine. The same on every OS (Windows has no
//! SIGHUP); the proxy answers with the outcome, so a config that does not load is reported
//! here, with what to fix, and the running configuration stays.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::cli::ReloadArgs;
use crate::config::Config;
use crate::error::Error;
use crate::output::say;

const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: &ReloadArgs) -> Result<(), Error> {
    let config = Config::load(&args.config)?;
    let Some(admin) = config.server.admin_bind else {
        return Err(Error::Refused(format!(
            "{} has no server.admin_bind: reload talks to the admin listener (e.g. \
             admin_bind: 127.0.0.1:9090; a restart applies it). On Linux and macOS, \
             `kill -HUP <pid>` (or `systemctl reload trae-proxy`) works without it",
            args.config.display()
        )));
    };
    let addr = SocketAddr::new(local(admin.ip()), admin.port());
    let answer = ask(addr).map_err(|e| {
        Error::Refused(format!(
            "no proxy answered on {addr} (server.admin_bind): {e}. Is it running with this \
             config?"
        ))
    })?;
    let (status, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let ok = status.split_whitespace().nth(1) == Some("200");
    let body = body.trim_end();
    if ok {
        say!("{body}");
        Ok(())
    } else {
        Err(Error::Refused(body.to_owned()))
    }
}

/// Where to reach a listener bound to `ip` from this machine: an unspecified address means
/// every interface, loopback included.
fn local(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

fn ask(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    conn.write_all(b"POST /reload HTTP/1.1\r\nHost: trae-proxy\r\nContent-Length: 0\r\n\r\n")?;
    let mut answer = String::new();
    conn.take(64 * 1024).read_to_string(&mut answer)?;
    Ok(answer)
}
