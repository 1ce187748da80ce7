//! One request/response exchange on an established connection, driven through ureq-proto's
//! server states: `RecvRequest` -> (`Send100`) -> (`RecvBody`) -> `ProvideResponse`, which is
//! handed to the application as a [`Responder`].
//!
//! ureq-proto 0.7.1 leaves gaps that are closed here, before it sees the request:
//! - the request head size is capped by the caller (the parking loop) and >128 header lines -> 431;
//! - `Content-Length` with `Transfer-Encoding`, two different lengths, or a coding other than
//!   `chunked` -> 400 (the request-smuggling patterns of RFC 9112 §6.3, which it accepts);
//! - a body over the limit -> 413 and close, without reading it (it has no path for that);
//! - POST without any length is read by it as chunked and hangs; RFC 9112 §6.3 says the body is
//!   empty, so we feed its dechunker the empty chunked body.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use http::{HeaderMap, Method, Request, Version, header};
use ureq_proto::server::{RecvRequestResult, Reply};

use super::conn::find_head_end;
use super::respond::{After, Responder, raw_error};
use crate::api_error::ApiError;

/// Read size for request bodies: one TLS record's worth is plenty per read.
const READ_BUF: usize = 4 * 1024;

/// Which listener a request came in on (`Responder::transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    /// The plain-HTTP listener (`server.http_bind`): base-URL clients and `CONNECT`.
    Plain,
}

/// The application: answers one request through its responder.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
    ) -> io::Result<After>;
}

/// Serves the request whose complete head starts `buf`, consuming its bytes from `buf` (what is
/// left belongs to the next request). `io` is the blocking TLS stream.
pub fn serve<S: Read + Write>(
    io: &mut S,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    transport: Transport,
    max_body: u64,
    handler: &dyn Handler,
) -> io::Result<After> {
    if find_head_end(buf).is_some_and(|end| end > super::MAX_HEAD_BYTES) {
        return reject(io, &ApiError::header_too_large(super::MAX_HEAD_BYTES));
    }
    let mut reply = Reply::new().map_err(io::Error::other)?;
    let (used, head) = match reply.try_request(buf) {
        Ok((used, Some(head))) => (used, head),
        Ok((_, None)) => return reject(io, &ApiError::malformed_http("incomplete request head")),
        Err(ureq_proto::Error::HttpParseTooManyHeaders) => {
            return reject(io, &ApiError::header_too_large(super::MAX_HEAD_BYTES));
        }
        Err(e) => return reject(io, &ApiError::malformed_http(&e.to_string())),
    };
    buf.drain(..used);

    let framing = match Framing::of(head.headers()) {
        Ok(f) => f,
        Err(why) => return reject(io, &ApiError::malformed_http(why)),
    };
    if let Framing::Length(len) = framing {
        if len > max_body {
            return reject(io, &ApiError::body_too_large(max_body));
        }
    }
    let http10 = head.version() == Version::HTTP_10;
    let head_only = head.method() == Method::HEAD;
    let mut close = wants_close(head.headers(), http10);

    let mut body = Vec::new();
    let provide = match reply.proceed() {
        None => return reject(io, &ApiError::malformed_http("incomplete request head")),
        Some(RecvRequestResult::ProvideResponse(p)) => {
            if framing != Framing::None {
                // A body on a method that takes none: we do not read it, so the connection
                // cannot be reused.
                close = true;
            }
            p
        }
        Some(RecvRequestResult::Send100(s)) => {
            let mut out = [0u8; 64];
            let (n, recv) = s.accept(&mut out).map_err(io::Error::other)?;
            io.write_all(&out[..n])?;
            io.flush()?;
            match read_body(io, buf, recv, framing, max_body, &mut body)? {
                Ok(p) => p,
                Err(err) => return reject(io, &err),
            }
        }
        Some(RecvRequestResult::RecvBody(recv)) => {
            match read_body(io, buf, recv, framing, max_body, &mut body)? {
                Ok(p) => p,
                Err(err) => return reject(io, &err),
            }
        }
    };

    let (parts, ()) = head.into_parts();
    let request = Request::from_parts(parts, body);
    let responder = Responder::new(io, provide, http10, close, head_only, transport);
    handler.handle(request, peer, responder)
}

/// How the request declares its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Result<Framing, &'static str> {
        let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
        let chunked = match (te.next(), te.next()) {
            (None, _) => false,
            (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => true,
            _ => {
                return Err(
                    "unsupported transfer-encoding (only a single \"chunked\" is accepted)",
                );
            }
        };
        let mut length = None;
        for v in headers.get_all(header::CONTENT_LENGTH) {
            let text = std::str::from_utf8(v.as_bytes()).map_err(|_| "invalid content-length")?;
            for part in text.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("invalid content-length");
                }
                let n: u64 = part.parse().map_err(|_| "content-length out of range")?;
                if length.is_some_and(|prev| prev != n) {
                    return Err("conflicting content-length values");
                }
                length = Some(n);
            }
        }
        match (chunked, length) {
            (true, Some(_)) => Err("both content-length and transfer-encoding"),
            (true, None) => Ok(Framing::Chunked),
            (false, Some(n)) => Ok(Framing::Length(n)),
            (false, None) => Ok(Framing::None),
        }
    }
}

fn wants_close(headers: &HeaderMap, http10: bool) -> bool {
    let has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    // HTTP/1.0 connections are closed after one response regardless; see respond.rs.
    http10 || has("close")
}

type BodyResult = Result<Reply<ureq_proto::server::state::ProvideResponse>, ApiError>;

/// Reads the body into `body`, from what is buffered first, then from the stream. The body is
/// decoded straight into its final buffer (sized from `Content-Length` when there is one), and
/// socket reads go through a small stack buffer: no per-request scratch allocations.
fn read_body<S: Read>(
    io: &mut S,
    buf: &mut Vec<u8>,
    mut recv: Reply<ureq_proto::server::state::RecvBody>,
    framing: Framing,
    max_body: u64,
    body: &mut Vec<u8>,
) -> io::Result<BodyResult> {
    if framing == Framing::None {
        // See the module doc: ureq-proto would wait for chunks that never come.
        let _ = recv
            .read(b"0\r\n\r\n", &mut [0u8; 8])
            .map_err(io::Error::other)?;
    }
    // One byte over the limit is enough to know the body is too large.
    let limit = usize::try_from(max_body)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let first = match framing {
        // n <= max_body, checked by the caller.
        Framing::Length(n) => usize::try_from(n).unwrap_or(0),
        Framing::Chunked | Framing::None => READ_BUF,
    };
    body.resize(first.clamp(1, limit), 0);
    let mut filled = 0;
    let mut chunk = [0u8; READ_BUF];
    while !recv.is_ended() {
        if filled == body.len() {
            if body.len() >= limit {
                return Ok(Err(ApiError::body_too_large(max_body)));
            }
            let grown = body.len().saturating_mul(2).max(READ_BUF).min(limit);
            body.resize(grown, 0);
        }
        let Some(space) = body.get_mut(filled..) else {
            break;
        };
        let (used, produced) = match recv.read(buf, space) {
            Ok(v) => v,
            Err(e) => return Ok(Err(ApiError::malformed_http(&e.to_string()))),
        };
        buf.drain(..used);
        filled += produced;
        if filled as u64 > max_body {
            return Ok(Err(ApiError::body_too_large(max_body)));
        }
        if used == 0 && produced == 0 {
            let n = io.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed during the request body",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    body.truncate(filled);
    match recv.proceed() {
        Ok(p) => Ok(Ok(p)),
        Err(e) => Ok(Err(ApiError::malformed_http(&e.to_string()))),
    }
}

/// Answers with an error and closes: after a bad head or an unread body the byte stream can no
/// longer be trusted to start a new request.
fn reject<S: Write>(io: &mut S, err: &ApiError) -> io::Result<After> {
    io.write_all(&raw_error(err))?;
    io.flush()?;
    Ok(After::Close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn framing_rejects_smuggling_patterns() {
        let cases: &[&[(&str, &str)]] = &[
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "5, 6")],
            &[("content-length", "-1")],
            &[("content-length", "+5")],
            &[("content-length", "99999999999999999999999")],
            &[("transfer-encoding", "chunked, gzip")],
            &[("transfer-encoding", "gzip")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
        ];
        for case in cases {
            assert!(Framing::of(&headers(case)).is_err(), "{case:?} accepted");
        }
    }

    #[test]
    fn framing_accepts_the_valid_forms() {
        assert_eq!(Framing::of(&headers(&[])), Ok(Framing::None));
        assert_eq!(
            Framing::of(&headers(&[("content-length", "12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            Framing::of(&headers(&[
                ("content-length", "7"),
                ("content-length", "7")
            ])),
            Ok(Framing::Length(7))
        );
        assert_eq!(
            Framing::of(&headers(&[("transfer-encoding", "Chunked")])),
            Ok(Framing::Chunked)
        );
    }

    #[test]
    fn connection_tokens_are_matched_case_insensitively() {
        assert!(wants_close(
            &headers(&[("connection", "keep-alive, Close")]),
            false
        ));
        assert!(!wants_close(
            &headers(&[("connection", "keep-alive")]),
            false
        ));
        assert!(wants_close(&headers(&[]), true));
    }
}

/// Property tests (the CI-friendly stand-in for a fuzzer; cargo-fuzz needs a nightly toolchain):
/// whatever bytes a client sends, the request path answers with HTTP or closes — never a panic,
/// never a hang.
#[cfg(test)]
mod fuzz {
    use std::io::{Cursor, Read, Write};
    use std::net::{Ipv4Addr, SocketAddr};

    use http::StatusCode;
    use proptest::prelude::*;

    use super::*;

    /// A client connection made of fixed input bytes; what the server writes is kept.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Echo;

    impl Handler for Echo {
        fn handle(
            &self,
            req: Request<Vec<u8>>,
            _: SocketAddr,
            r: Responder<'_>,
        ) -> io::Result<After> {
            let body = req.into_body();
            let mut stream = r.stream(StatusCode::OK, Vec::new())?;
            stream.write(&body)?;
            stream.finish()
        }
    }

    fn serve_bytes(bytes: Vec<u8>) -> Vec<u8> {
        let mut buf = bytes.clone();
        let mut io = Duplex {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
        };
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        // Serve requests as the worker would while buffered heads remain.
        for _ in 0..8 {
            if crate::server::conn::find_head_end(&buf).is_none() {
                break;
            }
            match serve(&mut io, &mut buf, peer, Transport::Plain, 4096, &Echo) {
                Ok(After::KeepAlive) => {}
                Ok(_) | Err(_) => break,
            }
        }
        io.output
    }

    /// Answers with the body's length and byte sum.
    struct Measure;

    impl Handler for Measure {
        fn handle(
            &self,
            req: Request<Vec<u8>>,
            _: SocketAddr,
            r: Responder<'_>,
        ) -> io::Result<After> {
            let body = req.into_body();
            let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
            r.send(
                StatusCode::OK,
                Vec::new(),
                format!("{}:{sum}", body.len()).as_bytes(),
            )
        }
    }

    #[test]
    fn bodies_of_any_size_and_framing_arrive_whole() {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        for size in [1usize, 4095, 4096, 4097, 70_000] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
            let mut by_length =
                format!("POST / HTTP/1.1\r\nContent-Length: {size}\r\n\r\n").into_bytes();
            by_length.extend_from_slice(&body);
            let mut chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in body.chunks(777) {
                chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                chunked.extend_from_slice(piece);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            for input in [by_length, chunked] {
                // Only the head is buffered; the body comes from the stream, as over a socket.
                let head_end = crate::server::conn::find_head_end(&input).unwrap();
                let mut buf = input[..head_end].to_vec();
                let mut io = Duplex {
                    input: Cursor::new(input[head_end..].to_vec()),
                    output: Vec::new(),
                };
                serve(&mut io, &mut buf, peer, Transport::Plain, 1 << 20, &Measure).unwrap();
                let out = String::from_utf8_lossy(&io.output);
                assert!(
                    out.ends_with(&format!("{size}:{sum}")),
                    "size {size}: {out}"
                );
            }
        }
    }

    fn request_like() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "PRI", "G ET", ""]);
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", ""]);
        let header = (
            prop::sample::select(vec![
                "Content-Length",
                "Transfer-Encoding",
                "Expect",
                "Connection",
                "Host",
                "X-A",
                "Bad Name",
            ]),
            prop::sample::select(vec![
                "0",
                "5",
                "-1",
                "chunked",
                "gzip, chunked",
                "100-continue",
                "close",
                "99999999999999999999",
                "é",
            ]),
        );
        (
            method,
            "[ -~]{0,20}",
            version,
            prop::collection::vec(header, 0..6),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(m, path, v, headers, body)| {
                let mut out = format!("{m} /{path} {v}\r\n").into_bytes();
                for (k, val) in headers {
                    out.extend_from_slice(format!("{k}: {val}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body);
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_get_http_or_nothing(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut input = bytes;
            input.extend_from_slice(b"\r\n\r\n");
            let out = serve_bytes(input);
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1."));
        }

        #[test]
        fn request_shaped_input_gets_http_or_nothing(input in request_like()) {
            let out = serve_bytes(input);
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1."), "{}", String::from_utf8_lossy(&out));
        }
    }
}
