//! A deliberately small HTTPS client for the tests: it trusts only the proxy's CA, connects to
//! loopback while presenting `api.openai.com` by SNI (as a client with the hosts-file entry
//! would), writes requests byte for byte, and records when each response chunk arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

pub fn tls_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects and completes the handshake as `name` (e.g. "api.openai.com" or "127.0.0.1").
pub fn connect_as(port: u16, ca: &Path, name: &str) -> Tls {
    connect_with(port, tls_config(ca), name).unwrap()
}

/// Connects offering these ALPN protocols; the handshake's error if it fails.
pub fn connect_alpn(port: u16, ca: &Path, protocols: &[&str]) -> Result<Tls, rustls::Error> {
    let mut config = (*tls_config(ca)).clone();
    config.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
    connect_with(port, Arc::new(config), "api.openai.com")
}

/// Connects from the loopback address `source` (127.0.0.2, say): another client, as the proxy's
/// per-client limits see it.
pub fn connect_from(port: u16, ca: &Path, source: [u8; 4]) -> Tls {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from((source, 0)).into())
        .unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    handshake(sock.into(), tls_config(ca), "api.openai.com").unwrap()
}

fn connect_with(port: u16, config: Arc<ClientConfig>, name: &str) -> Result<Tls, rustls::Error> {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    handshake(sock, config, name)
}

fn handshake(sock: TcpStream, config: Arc<ClientConfig>, name: &str) -> Result<Tls, rustls::Error> {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sock.set_nodelay(true).unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(config, server_name).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            return Err(e
                .into_inner()
                .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                .map_or(rustls::Error::General("handshake I/O failed".into()), |e| {
                    *e
                }));
        }
    }
    Ok(tls)
}

pub fn connect(port: u16, ca: &Path) -> Tls {
    connect_as(port, ca, "api.openai.com")
}

#[derive(Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Each body chunk (chunked encoding) with the time it was read.
    pub chunks: Vec<(Instant, Vec<u8>)>,
    /// Whether the body ended as its framing says (terminating chunk, full length).
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The JSON chunks of a stream that ends with one `data: [DONE]`, in order.
    pub fn sse_chunks(&self) -> Vec<serde_json::Value> {
        let data = self.sse_data();
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            self.text()
        );
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// The `data:` payloads of the SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|event| {
                let lines: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                (!lines.is_empty()).then(|| lines.join("\n"))
            })
            .collect()
    }
}

/// A chat completion POST with a JSON body and the headers an OpenAI SDK sends.
pub fn chat_request(body: &str, extra_headers: &str) -> Vec<u8> {
    post_request("/v1/chat/completions", "sk-test-key", body, extra_headers)
}

/// A POST of a JSON body to `path` with `key` as its Bearer token.
pub fn post_request(path: &str, key: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.openai.com\r\n\r\n").into_bytes()
}

/// Sends `raw` on a new connection and reads one response.
pub fn roundtrip(port: u16, ca: &Path, raw: &[u8]) -> Response {
    let mut tls = connect(port, ca);
    tls.write_all(raw).unwrap();
    tls.flush().unwrap();
    let mut reader = BufReader::new(tls);
    read_response(&mut reader).unwrap()
}

/// Reads one response; `None` if the connection closed before a status line.
pub fn read_response<R: Read>(reader: &mut BufReader<R>) -> Option<Response> {
    let mut line = String::new();
    let mut interim;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        interim = line.starts_with("HTTP/1.1 1");
        if !interim {
            break;
        }
        // Skip a 1xx response: its head ends at the next empty line.
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap().to_owned();
    let status: u16 = parts.next().unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    let mut chunks = Vec::new();
    let mut complete = true;
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        complete = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let at = Instant::now();
            let Ok(size) = usize::from_str_radix(line.trim_end(), 16) else {
                break;
            };
            if size == 0 {
                line.clear();
                reader.read_line(&mut line).unwrap_or(0);
                complete = line == "\r\n";
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                break;
            }
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
            chunks.push((at, chunk));
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().unwrap();
        body.resize(len, 0);
        complete = reader.read_exact(&mut body).is_ok();
    } else if version == "HTTP/1.0" || get("connection").as_deref() == Some("close") {
        let _ = reader.read_to_end(&mut body);
    }
    Some(Response {
        version,
        status,
        headers,
        body,
        chunks,
        complete,
    })
}
