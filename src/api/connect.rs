//! Forward-proxy mode: `CONNECT host:port` on the plain-HTTP listener, for IDEs that honour an
//! HTTP proxy setting (`http.proxy`, `HTTPS_PROXY`) and so need no hosts-file entry. For our
//! `domain`/`domains` the proxy answers 200 and then speaks TLS as that host itself (the client
//! only has to trust the CA); for any other host it tunnels the bytes untouched — or refuses,
//! per `server.tunnel`.
//!
//! `CONNECT` is not subject to `access_keys` (clients send no Bearer token there): the requests
//! inside an intercepted connection are, and `server.tunnel` decides who may tunnel.
//!
//! Where a tunnel may lead is decided on the resolved address, not the name (a name can resolve
//! to anything): public addresses on `server.tunnel_ports` (443 by default). Loopback, private,
//! link-local, carrier-grade NAT and other special ranges only when `server.tunnel_allow` names
//! them, and the proxy's own listeners never — otherwise any LAN host could reach the admin
//! listener, or anything else bound to 127.0.0.1, through the proxy.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use http::Request;
use log::debug;

use crate::api::context::Ctx;
use crate::api::reply;
use crate::api_error::ApiError;
use crate::cidr::Cidr;
use crate::config::{Config, TunnelPolicy};
use crate::server::{After, Responder, Transport, Upgrade};

pub struct Connect {
    /// `domain` and `domains`, lower-case: intercepted.
    names: Vec<String>,
    policy: TunnelPolicy,
    connect_timeout: Duration,
    /// `server.tunnel_allow`.
    allow: Vec<Cidr>,
    /// `server.tunnel_ports`; empty: any.
    ports: Vec<u16>,
    /// This process's listeners.
    own: Vec<SocketAddr>,
}

/// Why a tunnel may not go to an address.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Port,
    Own,
    Special,
}

impl Connect {
    pub fn new(config: &Config, own: Vec<SocketAddr>) -> Connect {
        Connect {
            names: std::iter::once(&config.domain)
                .chain(&config.extra_domains)
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            policy: config.server.tunnel,
            connect_timeout: config.server.timeouts.connect,
            allow: config.server.tunnel_allow.clone(),
            ports: config.server.tunnel_ports.clone(),
            own,
        }
    }

    /// Whether a tunnel may lead to `addr`.
    fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        if !self.ports.is_empty() && !self.ports.contains(&addr.port()) {
            return Err(Refusal::Port);
        }
        let ip = canonical(addr.ip());
        if self.is_own(ip, addr.port()) {
            return Err(Refusal::Own);
        }
        if is_public(ip) || self.allow.iter().any(|c| c.contains(ip)) {
            Ok(())
        } else {
            Err(Refusal::Special)
        }
    }

    /// One of this process's listeners: the same port on the address it is bound to, or on any
    /// address of this machine when it is bound to all of them.
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|l| {
            l.port() == port
                && (canonical(l.ip()) == ip
                    || (l.ip().is_unspecified()
                        && (ip.is_loopback() || ip.is_unspecified() || is_local(ip))))
        })
    }

    pub fn handle(
        &self,
        request: &Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
        ctx: &mut Ctx,
    ) -> io::Result<After> {
        if responder.transport() != Transport::Plain {
            let e = ApiError::method_not_allowed("CONNECT", "this port (use server.http_bind)");
            return reply::error(responder, ctx, &e);
        }
        let Some((host, port)) = target(request) else {
            let e = ApiError::malformed_http("CONNECT needs host:port");
            return reply::error(responder, ctx, &e);
        };
        ctx.backend = Some(format!("connect:{host}"));
        if self.names.iter().any(|n| n.eq_ignore_ascii_case(&host)) {
            ctx.status = 200;
            return responder.connect_established(Upgrade::Intercept);
        }
        let allowed = match self.policy {
            TunnelPolicy::Allow => true,
            TunnelPolicy::Deny => false,
            TunnelPolicy::Local => is_lan(peer.ip()),
        };
        if !allowed {
            let e = ApiError::tunnel_denied(format!(
                "tunnelling to {host} is not allowed from here (server.tunnel)"
            ));
            return reply::error(responder, ctx, &e);
        }
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        // Only the addresses that passed the check are connected to: the name is not resolved
        // a second time, so it cannot change its answer in between.
        let mut refusal = None;
        let permitted: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| match self.check(**a) {
                Ok(()) => true,
                Err(why) => {
                    refusal.get_or_insert((why, **a));
                    false
                }
            })
            .copied()
            .collect();
        if let (true, Some((why, addr))) = (permitted.is_empty(), refusal) {
            debug!("{peer}: tunnel to {host}:{port} ({addr}) refused: {why:?}");
            let e = ApiError::tunnel_denied(match why {
                Refusal::Port => {
                    format!("tunnelling to port {port} is not allowed (server.tunnel_ports)")
                }
                Refusal::Own => format!("{host}:{port} is this proxy itself"),
                Refusal::Special => format!(
                    "tunnelling to {host} is not allowed: {} is a loopback, private or \
                     link-local address (server.tunnel_allow)",
                    addr.ip()
                ),
            });
            return reply::error(responder, ctx, &e);
        }
        let upstream = permitted
            .iter()
            .find_map(|a| TcpStream::connect_timeout(a, self.connect_timeout).ok());
        match upstream {
            Some(stream) => {
                debug!("{peer}: tunnel to {host}:{port}");
                ctx.status = 200;
                responder.connect_established(Upgrade::Tunnel(stream))
            }
            None => {
                let e = ApiError::tunnel_unreachable(&host, port);
                reply::error(responder, ctx, &e)
            }
        }
    }
}

/// `host:port` of a CONNECT request (authority form, RFC 9110 §9.3.6).
fn target(request: &Request<Vec<u8>>) -> Option<(String, u16)> {
    let authority = request.uri().authority()?;
    Some((
        authority.host().trim_matches(['[', ']']).to_owned(),
        authority.port_u16()?,
    ))
}

/// Loopback, private (RFC 1918), link-local and unique-local addresses: clients on the LAN.
fn is_lan(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A globally routable address: none of the ranges RFC 6890 sets aside (this network,
/// loopback, private, carrier-grade NAT, link-local, documentation, benchmarking, multicast,
/// reserved, unique-local), nor a NAT64 address embedding one.
fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(a == 0
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 (RFC 6052): judged by the IPv4 address it carries.
        let [_, _, _, _, _, _, hi, lo] = s;
        return is_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    !(v6.is_unspecified()
        || v6.is_loopback()
        || s[0..6] == [0; 6]
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xff00) == 0xff00
        || (s[0] == 0x2001 && s[1] == 0x0db8))
}

/// An address of this machine: one a socket can be bound to.
fn is_local(ip: IpAddr) -> bool {
    TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_means_globally_routable_whatever_the_notation() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for special in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(special.parse().unwrap()), "{special}");
        }
    }

    #[test]
    fn local_means_loopback_and_lan() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.5",
            "172.16.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.0.2",
        ] {
            assert!(is_lan(local.parse().unwrap()), "{local}");
        }
        for remote in ["8.8.8.8", "2001:4860::8888", "::ffff:1.1.1.1"] {
            assert!(!is_lan(remote.parse().unwrap()), "{remote}");
        }
    }
}
