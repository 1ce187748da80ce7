//! CONNECT from the LAN: the plain listener must not become a way into this machine or its
//! network (the admin listener, anything bound to 127.0.0.1, the cloud metadata address).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Proxy, config_yaml};
use crate::mock::Mock;

/// Sends `CONNECT target` on the plain listener; returns the status line and the socket.
fn connect_to(port: u16, target: &str) -> (String, TcpStream) {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(sock, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    (text, sock)
}

fn proxy(mock: &Mock, extra: &str) -> Proxy {
    let apis = "  - {name: m, endpoint: \"{UPSTREAM}\", custom_model_id: m, target_model_id: chat}";
    Proxy::start(&config_yaml(
        &mock.url(),
        apis,
        &format!("  http_bind: 127.0.0.1:0\n  admin_bind: 127.0.0.1:0\n{extra}"),
    ))
}

#[test]
fn connect_never_reaches_loopback_private_link_local_or_the_proxy_itself_by_default() {
    let mock = Mock::start();
    let proxy = proxy(&mock, "");
    let plain = proxy.logged_port("plain-HTTP listener");
    let admin = proxy.logged_port("admin listener");
    for target in [
        format!("127.0.0.1:{admin}"),
        format!("localhost:{}", mock.port),
        format!("127.0.0.1:{}", mock.port),
        format!("127.0.0.1:{plain}"),
        "[::1]:443".to_owned(),
        "10.1.2.3:443".to_owned(),
        "192.168.1.1:443".to_owned(),
        "169.254.169.254:443".to_owned(),
        "0.0.0.0:443".to_owned(),
        "100.64.0.1:443".to_owned(),
        "[fd00::1]:443".to_owned(),
        "[::ffff:127.0.0.1]:443".to_owned(),
    ] {
        let (head, _) = connect_to(plain, &target);
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
    }
    assert!(mock.requests().is_empty());
}

#[test]
fn connect_reaches_what_the_allow_list_names_but_never_the_proxy_itself() {
    let mock = Mock::start();
    let proxy = proxy(
        &mock,
        "  tunnel_allow: [\"127.0.0.0/8\"]\n  tunnel_ports: []\n",
    );
    let plain = proxy.logged_port("plain-HTTP listener");
    let admin = proxy.logged_port("admin listener");
    let (head, mut sock) = connect_to(plain, &format!("127.0.0.1:{}", mock.port));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    sock.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    sock.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    for own in [plain, admin, proxy.port] {
        let (head, _) = connect_to(plain, &format!("127.0.0.1:{own}"));
        assert!(head.starts_with("HTTP/1.1 403"), "own port {own}: {head}");
    }
    // The default ports are 443 only: another port needs tunnel_ports.
    let strict = self::proxy(&mock, "  tunnel_allow: [\"127.0.0.0/8\"]\n");
    let (head, _) = connect_to(
        strict.logged_port("plain-HTTP listener"),
        &format!("127.0.0.1:{}", mock.port),
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}
