//! Writing one response to the client: a complete body with a known length, or a stream that is
//! flushed piece by piece (SSE events reach the client the moment they are written).
//!
//! HTTP/1.1 responses go through ureq-proto's `SendResponse`/`SendBody` states. HTTP/1.0
//! clients get a head written here and a `Content-Length` or close-delimited body, because
//! ureq-proto 0.7 would send them `Transfer-Encoding: chunked`, which RFC 9112 §6.1 forbids.

use std::io::{self, Write};

use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use ureq_proto::server::state::{ProvideResponse, SendBody, SendResponse};
use ureq_proto::server::{Reply, SendResponseResult};

use super::limits::ClientRequest;
use crate::api_error::ApiError;

/// Room for a response's head per write of it: a longer head takes more writes, a header line
/// longer than this a larger room.
const HEAD_ROOM: usize = 1024;
/// Room for a chunk's size line and its closing CRLF around the data. ureq-proto's chunk writer
/// can end the body early when exactly 5 bytes of output space remain while input is pending
/// (0.7.1): each chunk is written into a buffer of its own size plus this, passing at most
/// `calculate_max_input` of it, so input never waits for space.
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
        let response = build(status, headers, Some(body.len()), close);
        let mut send = self.reply.provide(response).map_err(proto)?;
        // Head and body go out in one write: one TLS record and one syscall for a small reply.
        let mut wire = Vec::with_capacity(body.len() + HEAD_ROOM);
        write_head(&mut send, &mut wire)?;
        let cleanup = match send.proceed() {
            SendResponseResult::SendBody(mut body_state) => {
                // A `Content-Length` body goes out as it is: no framing to add.
                body_state.consume_direct_write(body.len()).map_err(proto)?;
                wire.extend_from_slice(body);
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
        let response = build(status, headers, None, close);
        let mut send = self.reply.provide(response).map_err(proto)?;
        let mut head = Vec::with_capacity(HEAD_ROOM);
        write_head(&mut send, &mut head)?;
        self.out.write_all(&head)?;
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

/// The response head for ureq-proto, filled in place: http's builder moves the whole head
/// through every `.header()` call (two copies of it each, callgrind).
fn build(
    status: StatusCode,
    headers: Headers,
    content_length: Option<usize>,
    close: bool,
) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.reserve(headers.len() + 2);
    for (name, value) in headers {
        map.append(name, value);
    }
    if let Some(len) = content_length {
        map.append(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if close {
        // ureq-proto recognises only this exact lowercase value.
        map.append(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
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

/// Appends the response head to `wire`, however long its header lines: written straight into
/// it, with no buffer in between to zero and copy out of.
fn write_head(send: &mut Reply<SendResponse>, wire: &mut Vec<u8>) -> io::Result<()> {
    let mut room = HEAD_ROOM;
    while !send.is_finished() {
        let start = wire.len();
        wire.resize(start + room, 0);
        let written = send.write(&mut wire[start..]);
        wire.truncate(start + *written.as_ref().unwrap_or(&0));
        match written {
            // A header line longer than the room (a backend's trace id, say). Not past the
            // limit on a request's head: a backend's head is no business of a larger one.
            Err(ureq_proto::Error::OutputOverflow) if room < super::MAX_HEAD_BYTES => room *= 4,
            written => {
                written.map_err(proto)?;
            }
        }
    }
    Ok(())
}

fn proto(e: ureq_proto::Error) -> io::Error {
    io::Error::other(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq_proto::server::RecvRequestResult;

    /// The right to answer a `GET` on HTTP/1.1, writing into `out`.
    fn responder(out: &mut Vec<u8>) -> Responder<'_> {
        let mut reply = Reply::new().unwrap();
        reply
            .try_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let Some(RecvRequestResult::ProvideResponse(reply)) = reply.proceed() else {
            panic!("a GET without a body should be ready for its response");
        };
        Responder::new(out, reply, false, false, false, Transport::Tls)
    }

    #[test]
    fn a_complete_response_carries_its_head_and_body_whatever_their_sizes() {
        for (header_len, body_len) in [(10, 0), (10, 300), (3000, 5), (20_000, 100_000)] {
            let mut out = Vec::new();
            let id = "i".repeat(header_len);
            let body = vec![b'b'; body_len];
            let headers = vec![(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_str(&id).unwrap(),
            )];
            let after = responder(&mut out).send(StatusCode::OK, headers, &body);
            assert!(
                matches!(after, Ok(After::KeepAlive)),
                "{header_len}: {after:?}"
            );
            let text = String::from_utf8(out).unwrap();
            let (head, sent) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(
                head.contains(&format!("\r\nx-request-id: {id}")),
                "{header_len}"
            );
            assert!(
                head.contains(&format!("\r\ncontent-length: {body_len}")),
                "{head}"
            );
            assert_eq!(sent.as_bytes(), &body[..], "{header_len}/{body_len}");
        }
    }

    #[test]
    fn a_streamed_response_carries_a_long_header_and_its_chunks() {
        let mut out = Vec::new();
        let id = "i".repeat(20_000);
        let headers = vec![(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_str(&id).unwrap(),
        )];
        let mut stream = responder(&mut out).stream(StatusCode::OK, headers).unwrap();
        stream.write(b"data: 1\n\n").unwrap();
        assert!(matches!(stream.finish(), Ok(After::KeepAlive)));
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("\r\nx-request-id: {id}")));
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        assert_eq!(body, "9\r\ndata: 1\n\n\r\n0\r\n\r\n");
    }
}
