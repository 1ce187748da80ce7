//! Forward-proxy mode: `CONNECT host:port` on the plain-HTTP listener, for IDEs that honour an
//! HTTP proxy setting (`http.proxy`, `HTTPS_PROXY`) and so need no hosts-file entry. For our
//! `domain`/`domains` the proxy answers 200 and then speaks TLS as that host itself (the client
//! only has to trust the CA); for any other host it tunnels the bytes untouched — or refuses,
//! per `server.tunnel`.
//!
//! `CONNECT` is not subject to `access_keys` (clients send no Bearer token there): the requests
//! inside an intercepted connection are, and `server.tunnel` decides who may tunnel.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use http::{Request, StatusCode};
use log::debug;

use crate::api_error::ApiError;
use crate::config::TunnelPolicy;
use crate::proxy::Access;
use crate::server::{After, Responder, Transport, Upgrade};

pub struct Connect {
    /// `domain` and `domains`, lower-case: intercepted.
    pub names: Vec<String>,
    pub policy: TunnelPolicy,
    pub connect_timeout: Duration,
}

impl Connect {
    pub fn handle(
        &self,
        request: &Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
        access: &mut Access,
    ) -> io::Result<After> {
        if responder.transport() != Transport::Plain {
            let e = ApiError::method_not_allowed("CONNECT", "this port (use server.http_bind)");
            return access.error(responder, &e);
        }
        let Some((host, port)) = target(request) else {
            let e = ApiError::malformed_http("CONNECT needs host:port");
            return access.error(responder, &e);
        };
        access.backend = Some(format!("connect:{host}"));
        if self.names.iter().any(|n| n.eq_ignore_ascii_case(&host)) {
            access.status = 200;
            return responder.connect_established(Upgrade::Intercept);
        }
        let allowed = match self.policy {
            TunnelPolicy::Allow => true,
            TunnelPolicy::Deny => false,
            TunnelPolicy::Local => is_local(peer.ip()),
        };
        if !allowed {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "tunnel_denied",
                format!("tunnelling to {host} is not allowed from here (server.tunnel)"),
            );
            return access.error(responder, &e);
        }
        let upstream = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| {
                addrs.find_map(|a| TcpStream::connect_timeout(&a, self.connect_timeout).ok())
            });
        match upstream {
            Some(stream) => {
                debug!("{peer}: tunnel to {host}:{port}");
                access.status = 200;
                responder.connect_established(Upgrade::Tunnel(stream))
            }
            None => {
                let e = ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "tunnel_unreachable",
                    format!("cannot reach {host}:{port}"),
                );
                access.error(responder, &e)
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

/// Loopback, private (RFC 1918), link-local and unique-local addresses: the LAN.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(is_local(local.parse().unwrap()), "{local}");
        }
        for remote in ["8.8.8.8", "2001:4860::8888", "::ffff:1.1.1.1"] {
            assert!(!is_local(remote.parse().unwrap()), "{remote}");
        }
    }
}
