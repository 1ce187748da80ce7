//! The load generator's HTTP/1.1 client: one keep-alive connection, plain or TLS, requests
//! written whole, responses read by `Content-Length` or chunked framing.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

#[derive(Clone)]
pub enum Target {
    Plain(u16),
    Tls(u16, Arc<ClientConfig>),
}

pub fn tls_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub struct Client {
    io: BufReader<Box<dyn Io>>,
}

impl Client {
    pub fn connect(target: &Target) -> io::Result<Client> {
        Client::connect_from(target, [127, 0, 0, 1])
    }

    /// Connects from the loopback address `source`: another client, as a server counts them.
    pub fn connect_from(target: &Target, source: [u8; 4]) -> io::Result<Client> {
        let port = match target {
            Target::Plain(p) | Target::Tls(p, _) => *p,
        };
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&std::net::SocketAddr::from((source, 0)).into())?;
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        let sock: TcpStream = socket.into();
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let io: Box<dyn Io> = match target {
            Target::Plain(_) => Box::new(sock),
            Target::Tls(_, config) => {
                let name = ServerName::try_from("api.openai.com").map_err(io::Error::other)?;
                let conn =
                    ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
                let mut tls = StreamOwned::new(conn, sock);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Box::new(tls)
            }
        };
        Ok(Client {
            io: BufReader::with_capacity(64 * 1024, io),
        })
    }

    /// Sends one chat completion request and reads the whole answer; returns its latency.
    pub fn request(&mut self, body: &str) -> io::Result<Duration> {
        let started = Instant::now();
        self.send(body)?;
        let (status, chunked, length) = self.head()?;
        if status != 200 {
            return Err(io::Error::other(format!("status {status}")));
        }
        if chunked {
            self.chunks(|_| true)?;
        } else {
            let mut body = vec![0u8; length];
            self.io.read_exact(&mut body)?;
        }
        Ok(started.elapsed())
    }

    /// Sends a streaming request; `on_event` gets each SSE payload with its arrival time and
    /// returns whether to keep reading (false hangs up mid-stream).
    pub fn stream(
        &mut self,
        body: &str,
        mut on_event: impl FnMut(Instant, &str) -> bool,
    ) -> io::Result<()> {
        self.send(body)?;
        let (status, chunked, _) = self.head()?;
        if status != 200 || !chunked {
            return Err(io::Error::other(format!(
                "status {status}, chunked {chunked}"
            )));
        }
        self.chunks(|chunk| {
            let now = Instant::now();
            String::from_utf8_lossy(chunk)
                .split("\n\n")
                .filter_map(|event| event.strip_prefix("data: "))
                .all(|data| on_event(now, data))
        })
    }

    fn send(&mut self, body: &str) -> io::Result<()> {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-bench\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let io = self.io.get_mut();
        io.write_all(request.as_bytes())?;
        io.flush()
    }

    fn head(&mut self) -> io::Result<(u16, bool, usize)> {
        let mut line = String::new();
        if self.io.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut chunked, mut length) = (false, 0);
        loop {
            line.clear();
            self.io.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            } else if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        Ok((status, chunked, length))
    }

    /// Reads chunks until the last one, or until `each` returns false.
    fn chunks(&mut self, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            self.io.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(io::Error::other)?;
            let mut chunk = vec![0u8; size + 2];
            self.io.read_exact(&mut chunk)?;
            if size == 0 || !each(&chunk[..size]) {
                return Ok(());
            }
        }
    }
}
