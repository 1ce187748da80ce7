//! Writing one response to the client: a complete body with a known length, or a stream that is
//! flushed piece by piece (SSE events reach the client the moment they are written).
//!
//! HTTP/1.1 responses go through ureq-proto's `SendResponse`/`SendBody` states. HTTP/1.0
//! clients get a head written here and a `Content-Length` or close-delimited body, because
//! ureq-proto 0.7 would send them `Transfer-Encoding: chunked`, which RFC 9112 §6.1 forbids.

use std::io::{self, Write};

use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use ureq_proto::server::state::{ProvideResponse, SendBody};
use ureq_proto::server::{Reply, SendResponseResult};

use super::limits::ClientRequest;
use crate::api_error::ApiError;

/// Output buffer for ureq-proto's response head and complete bodies. Its chunk writer can end the
/// body early when exactly 5 bytes of output space remain while input is pending (ureq-proto
/// 0.7.1). Every write here starts with the whole buffer free and passes at most
/// `calculate_max_input` of it, so input never waits for space.
const OUT_BUF: usize = 4 * 1024;
/// Room for a chunk's size line and its closing CRLF around the data.
const CHUNK_FRAMING: usize = 32;

pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// Which listener a request came in on (`Responder::transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    /// The plain-HTTP listener (`server.http_bind`): base-URL clients and `CONNECT`.
    Plain,
}

/// How the connection goes on after a response.
#[derive(Debug)]
pub enum After {
    KeepAlive,
    Close,
    /// `CONNECT` accepted: the connection now carries something else.
    Upgrade(Upgrade),
}

#[derive(Debug)]
pub enum Upgrade {
    /// The client will speak TLS to us as the proxied domain (forward-proxy interception).
    Intercept,
    /// Bytes are relayed untouched to this connection.
    Tunnel(std::net::TcpStream),
}

/// The right to answer one request. Consumed by [`Responder::send`] or [`Responder::stream`].
pub struct Responder<'a> {
    out: &'a mut dyn Write,
    reply: Reply<ProvideResponse>,
    http10: bool,
    /// The request asked (or the server decided) to close after this response.
    close: bool,
    head_only: bool,
    transport: Transport,
    /// The client's request-in-flight share, given back with the responder (or the body stream
    /// it becomes) as the response is written: a client that sends its next request on another
    /// connection as soon as it has this response must find its share free, although this
    /// thread has still to log and count the request (with `max_requests_per_client: 1` it got
    /// a 429).
    share: Option<ClientRequest>,
}

/// An open streamed response body.
pub struct BodyStream<'a> {
    out: &'a mut dyn Write,
    mode: StreamMode,
    close: bool,
    pub bytes: u64,
    /// The responder's share, given back as the body ends.
    _share: Option<ClientRequest>,
}

enum StreamMode {
    Chunked(Box<Reply<SendBody>>),
    /// HTTP/1.0: the body ends when the connection closes.
    CloseDelimited,
}

impl<'a> Responder<'a> {
    pub(super) fn new(
        out: &'a mut dyn Write,
        reply: Reply<ProvideResponse>,
        http10: bool,
        close: bool,
        head_only: bool,
        transport: Transport,
    ) -> Self {
        Responder {
            out,
            reply,
            http10,
            close: close || http10,
            head_only,
            transport,
            share: None,
        }
    }

    /// Holds the client's request-in-flight share until the response is written.
    pub(super) fn holding(mut self, share: Option<ClientRequest>) -> Self {
        self.share = share;
        self
    }

    /// Closes the connection after this response (`Connection: close`).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Which listener the request came in on.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Sends a complete response with a `Content-Length`.
    pub fn send(self, status: StatusCode, headers: Headers, body: &[u8]) -> io::Result<After> {
        let close = self.close;
        if self.http10 {
            let head = head_http10(status, &headers, Some(body.len()));
            self.out.write_all(&head)?;
            if !self.head_only {
                self.out.write_all(body)?;
            }
            self.out.flush()?;
            return Ok(After::Close);
        }
        let response = build(status, headers, Some(body.len()), close)?;
        let mut send = self.reply.provide(response).map_err(proto)?;
        // Head and body go out in one write: one TLS record and one syscall for a small reply.
        let mut wire = Vec::with_capacity(body.len() + 512);
        let mut buf = [0u8; OUT_BUF];
        loop {
            let n = send.write(&mut buf).map_err(proto)?;
            wire.extend_from_slice(&buf[..n]);
            if send.is_finished() {
                break;
            }
        }
        let cleanup = match send.proceed() {
            SendResponseResult::SendBody(mut body_state) => {
                let mut rest = body;
                while !rest.is_empty() {
                    let (used, n) = body_state.write(rest, &mut buf).map_err(proto)?;
                    wire.extend_from_slice(&buf[..n]);
                    rest = &rest[used..];
                }
                body_state.proceed()
            }
            SendResponseResult::Cleanup(c) => c,
        };
        self.out.write_all(&wire)?;
        self.out.flush()?;
        Ok(if close || cleanup.must_close_connection() {
            After::Close
        } else {
            After::KeepAlive
        })
    }

    /// Sends the head of a response whose body follows in pieces.
    /// Answers a `CONNECT` with `200 Connection Established` (no body, no framing headers: RFC
    /// 9110 §9.3.6); the caller then hands the connection over as `upgrade`.
    pub fn connect_established(self, upgrade: Upgrade) -> io::Result<After> {
        self.out
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
        self.out.flush()?;
        Ok(After::Upgrade(upgrade))
    }

    /// Sends an OpenAI-shaped error.
    pub fn error(self, err: &ApiError) -> io::Result<After> {
        self.send(err.status, vec![json_content_type()], &err.to_body())
    }

    pub fn stream(self, status: StatusCode, headers: Headers) -> io::Result<BodyStream<'a>> {
        // A streamed body keeps this thread for as long as it lasts, at a fraction of the depth
        // its request needed: give the rest of the stack back (see os.rs).
        super::os::release_unused();
        let close = self.close;
        if self.http10 {
            let head = head_http10(status, &headers, None);
            self.out.write_all(&head)?;
            self.out.flush()?;
            return Ok(BodyStream {
                out: self.out,
                mode: StreamMode::CloseDelimited,
                close: true,
                bytes: 0,
                _share: self.share,
            });
        }
        let response = build(status, headers, None, close)?;
        let mut send = self.reply.provide(response).map_err(proto)?;
        let mut buf = vec![0u8; OUT_BUF];
        loop {
            let n = send.write(&mut buf).map_err(proto)?;
            self.out.write_all(&buf[..n])?;
            if send.is_finished() {
                break;
            }
        }
        self.out.flush()?;
        let mode = match send.proceed() {
            SendResponseResult::SendBody(b) => StreamMode::Chunked(Box::new(b)),
            // HEAD: no body goes out; writes are dropped.
            SendResponseResult::Cleanup(_) => StreamMode::CloseDelimited,
        };
        Ok(BodyStream {
            out: self.out,
            mode,
            close: close || self.head_only,
            bytes: 0,
            _share: self.share,
        })
    }
}

impl BodyStream<'_> {
    /// Writes `data` and flushes it to the client at once.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            // An empty chunk would end the body.
            return Ok(());
        }
        match &mut self.mode {
            StreamMode::CloseDelimited => self.out.write_all(data)?,
            StreamMode::Chunked(body) => {
                // One chunk per write, framed in a buffer of its size: a stream spends most of
                // its life waiting for the next event, and keeps no buffer meanwhile.
                let mut buf = vec![0u8; data.len() + CHUNK_FRAMING];
                let mut rest = data;
                while !rest.is_empty() {
                    let max = body.calculate_max_input(buf.len()).max(1);
                    let take = rest.len().min(max);
                    let (used, n) = body.write(&rest[..take], &mut buf).map_err(proto)?;
                    self.out.write_all(&buf[..n])?;
                    rest = &rest[used..];
                }
            }
        }
        self.bytes += data.len() as u64;
        self.out.flush()
    }

    /// Ends the body cleanly (the terminating chunk for HTTP/1.1).
    pub fn finish(self) -> io::Result<After> {
        match self.mode {
            StreamMode::CloseDelimited => {
                self.out.flush()?;
                Ok(After::Close)
            }
            StreamMode::Chunked(mut body) => {
                let mut buf = [0u8; CHUNK_FRAMING];
                let (_, n) = body.write(&[], &mut buf).map_err(proto)?;
                self.out.write_all(&buf[..n])?;
                self.out.flush()?;
                let cleanup = body.proceed();
                Ok(if self.close || cleanup.must_close_connection() {
                    After::Close
                } else {
                    After::KeepAlive
                })
            }
        }
    }

    /// Ends the response without its terminating chunk: the client sees a truncated body, not a
    /// clean end. The connection must then close.
    pub fn abort(self) -> After {
        let _ = self.out.flush();
        After::Close
    }
}

/// `Content-Type: application/json`, the header of every JSON reply and error.
pub fn json_content_type() -> (HeaderName, HeaderValue) {
    (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
}

fn build(
    status: StatusCode,
    headers: Headers,
    content_length: Option<usize>,
    close: bool,
) -> io::Result<Response<()>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    if let Some(len) = content_length {
        response = response.header(header::CONTENT_LENGTH, len);
    }
    if close {
        // ureq-proto recognises only this exact lowercase value.
        response = response.header(header::CONNECTION, "close");
    }
    response.body(()).map_err(io::Error::other)
}

fn head_http10(status: StatusCode, headers: &Headers, content_length: Option<usize>) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.0 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(len) = content_length {
        head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// A complete error response for a connection that will be closed right after, written where
/// no request could be parsed (bad head, timeout): there is no `Reply` state to go through.
pub fn raw_error(err: &ApiError) -> Vec<u8> {
    let body = err.to_body();
    // Busy answers say when to come back; the OpenAI SDKs wait that long before retrying.
    let retry = match err.status.as_u16() {
        429 | 503 => "retry-after: 1\r\n",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn proto(e: ureq_proto::Error) -> io::Error {
    io::Error::other(e)
}
