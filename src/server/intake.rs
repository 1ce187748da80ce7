//! Receiving one request: its head parsed and checked, its body decoded as the bytes arrive,
//! without any I/O of its own. The parking loop feeds it what a connection has received and
//! gets back "need more", "ready" or "reject"; only a ready request — head and whole body in
//! memory — goes to a worker, so no thread ever waits on a client that sends slowly (Apache's
//! event MPM and nginx's request buffering do the same). A worker uses it too, for a pipelined
//! request already in its buffer.
//!
//! ```text
//!   bytes ──complete head──▶ checks ──▶ (100 Continue) ──▶ body decoded as it arrives ──▶ Ready
//!                              │ 400 / 413 / 431 / 503                                  │
//!                              ▼                                                         ▼
//!                           Reject                                worker: handler + response
//! ```
//!
//! ureq-proto's server states do the parsing and decoding (`RecvRequest` -> `Send100` ->
//! `RecvBody` -> `ProvideResponse`). Its gaps are closed here, before it sees the request:
//! - the head is capped by the caller at [`MAX_HEAD_BYTES`](super::MAX_HEAD_BYTES), and more than
//!   128 header lines is 431;
//! - `Content-Length` with `Transfer-Encoding`, two different lengths, or a coding other than
//!   `chunked` -> 400 (the request-smuggling patterns of RFC 9112 section 6.3, which it accepts);
//! - an HTTP/1.1 request without exactly one `Host`, or any with two -> 400 (RFC 9112 section
//!   3.2);
//! - a declared body over the limit -> 413 without reading it (it has no path for that);
//! - POST without any length is read by it as chunked and would wait for chunks; RFC 9112
//!   section 6.3 says the body is empty, so its dechunker is fed the empty chunked body.
//!
//! Every body held in memory is charged to a [`BodyBudget`] shared by all connections: twice its
//! size, for the body and the rewritten copy the proxy sends upstream. Past the budget the
//! request is refused with 503 rather than risking the process on a small box.

use std::time::Instant;

use http::{HeaderMap, Method, Request, Version, header};
use ureq_proto::server::state::{ProvideResponse, RecvBody};
use ureq_proto::server::{RecvRequestResult, Reply};

use super::limits::{BodyBudget, Charge, ClientRequest};
use crate::api_error::ApiError;

/// What a worker gets: the request with its whole body, and the right to answer it.
pub struct Complete {
    pub request: Request<Vec<u8>>,
    pub reply: Reply<ProvideResponse>,
    pub http10: bool,
    /// The client asked to close after the response, or its unread body forces it.
    pub close: bool,
    pub head_only: bool,
    /// The body's share of the memory budget, given back when this is dropped.
    pub charge: Option<Charge>,
    /// The client's request-in-flight share ([`admit`](super::admit)), given back as the
    /// response is written (the responder, then its body stream, holds it).
    pub share: Option<ClientRequest>,
}

/// A request whose head is parsed and whose body is arriving.
pub struct Receiving {
    head: http::request::Parts,
    recv: Reply<RecvBody>,
    body: Vec<u8>,
    filled: usize,
    /// One byte over the limit is enough to know the body is too large.
    limit: usize,
    max_body: u64,
    http10: bool,
    close: bool,
    charge: Option<Charge>,
    /// When the head was complete: the body's deadline and rate count from here.
    pub started: Instant,
}

impl Receiving {
    /// Body bytes received so far (decoded).
    pub fn received(&self) -> u64 {
        self.filled as u64
    }

    /// The request line, for a log line about a request that never completed.
    pub fn describe(&self) -> (&Method, &str) {
        (&self.head.method, self.head.uri.path())
    }
}

/// What one step of receiving came to.
pub enum Step {
    /// Nothing complete yet: more bytes are needed.
    NeedMore,
    /// The whole request is here.
    Ready(Box<Complete>),
    /// Answer with this error and close: the byte stream can no longer be trusted to start a
    /// new request.
    Reject(ApiError),
}

/// What receiving may use: the body size limit and the shared memory budget.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    pub max_body: u64,
    pub budget: &'a BodyBudget,
}

/// Advances the request at the front of `buf` with what `buf` holds, consuming the bytes that
/// belong to it (what is left belongs to the next request). `receiving` carries a request
/// across calls while its body arrives. Bytes to send the client before it sends its body
/// (`100 Continue`) are appended to `out`.
pub fn advance(
    receiving: &mut Option<Box<Receiving>>,
    buf: &mut Vec<u8>,
    limits: Limits<'_>,
    out: &mut Vec<u8>,
) -> Step {
    if receiving.is_none() {
        match begin(buf, limits, out) {
            Begun::Body(r) => *receiving = Some(r),
            Begun::Done(step) => return step,
        }
    }
    let Some(r) = receiving.as_mut() else {
        return Step::NeedMore;
    };
    match read_body(r, buf, limits) {
        Ok(false) => Step::NeedMore,
        Ok(true) => match receiving.take() {
            Some(r) => finish(*r),
            None => Step::NeedMore,
        },
        Err(e) => {
            *receiving = None;
            Step::Reject(e)
        }
    }
}

enum Begun {
    Body(Box<Receiving>),
    Done(Step),
}

/// Parses a complete head at the front of `buf` (`NeedMore` while there is none) and checks it.
fn begin(buf: &mut Vec<u8>, limits: Limits<'_>, out: &mut Vec<u8>) -> Begun {
    let too_large = || {
        Begun::Done(Step::Reject(ApiError::header_too_large(
            super::MAX_HEAD_BYTES,
        )))
    };
    match find_head_end(buf) {
        None if buf.len() > super::MAX_HEAD_BYTES => too_large(),
        None => Begun::Done(Step::NeedMore),
        Some(end) if end > super::MAX_HEAD_BYTES => too_large(),
        Some(_) => start(buf, limits, out).unwrap_or_else(|e| Begun::Done(Step::Reject(e))),
    }
}

/// The head parsed from `buf` (a complete one is there) and checked; then either a request
/// without a body, ready, or one whose body is to be received.
fn start(buf: &mut Vec<u8>, limits: Limits<'_>, out: &mut Vec<u8>) -> Result<Begun, ApiError> {
    let malformed = |why: &str| ApiError::malformed_http(why);
    let mut reply = Reply::new().map_err(|_| ApiError::internal("cannot start a request"))?;
    let (used, head) = match reply.try_request(buf) {
        Ok((used, Some(head))) => (used, head),
        Ok((_, None)) => return Err(malformed("incomplete request head")),
        Err(ureq_proto::Error::HttpParseTooManyHeaders) => {
            return Err(ApiError::header_too_large(super::MAX_HEAD_BYTES));
        }
        Err(e) => return Err(malformed(&e.to_string())),
    };
    buf.drain(..used);
    let (head, ()) = head.into_parts();
    let http10 = head.version == Version::HTTP_10;
    check_host(&head.headers, http10).map_err(malformed)?;
    let framing = Framing::of(&head.headers).map_err(malformed)?;
    if matches!(framing, Framing::Length(len) if len > limits.max_body) {
        return Err(ApiError::body_too_large(limits.max_body));
    }
    let close = wants_close(&head.headers, http10);
    let recv = match reply.proceed() {
        None => return Err(malformed("incomplete request head")),
        Some(RecvRequestResult::ProvideResponse(reply)) => {
            return Ok(Begun::Done(Step::Ready(Box::new(Complete {
                head_only: head.method == Method::HEAD,
                request: Request::from_parts(head, Vec::new()),
                reply,
                http10,
                // A body on a method that takes none is not read, so the connection cannot be
                // reused.
                close: close || framing != Framing::None,
                charge: None,
                share: None,
            }))));
        }
        Some(RecvRequestResult::Send100(s)) => {
            let mut bytes = [0u8; 64];
            let (n, recv) = s
                .accept(&mut bytes)
                .map_err(|e| malformed(&e.to_string()))?;
            out.extend_from_slice(bytes.get(..n).unwrap_or_default());
            recv
        }
        Some(RecvRequestResult::RecvBody(recv)) => recv,
    };
    let mut receiving = receive(head, recv, framing, limits)?;
    receiving.http10 = http10;
    receiving.close = close;
    Ok(Begun::Body(receiving))
}

/// Ready to receive a body: a first buffer sized from its framing, charged to the budget.
fn receive(
    head: http::request::Parts,
    mut recv: Reply<RecvBody>,
    framing: Framing,
    limits: Limits<'_>,
) -> Result<Box<Receiving>, ApiError> {
    if framing == Framing::None {
        // See the module doc: ureq-proto would wait for chunks that never come.
        if recv.read(b"0\r\n\r\n", &mut [0u8; 8]).is_err() {
            return Err(ApiError::malformed_http("request body framing"));
        }
    }
    let limit = usize::try_from(limits.max_body)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let first = match framing {
        // At most max_body, checked before.
        Framing::Length(n) => usize::try_from(n).unwrap_or(0),
        Framing::Chunked => FIRST_CHUNKED,
        Framing::None => 0,
    };
    let size = first.clamp(1, limit);
    let charge = limits.budget.charge(2 * size as u64).ok_or_else(|| {
        ApiError::server_busy("request bodies held in memory are at server.max_buffered_body_bytes")
    })?;
    Ok(Box::new(Receiving {
        head,
        recv,
        body: vec![0u8; size],
        filled: 0,
        limit,
        max_body: limits.max_body,
        http10: false,
        close: false,
        charge: Some(charge),
        started: Instant::now(),
    }))
}

/// First allocation for a body of unknown length; doubled as it fills.
const FIRST_CHUNKED: usize = 16 * 1024;

/// Decodes what `buf` holds into the body. `Ok(true)` once the body has ended.
fn read_body(r: &mut Receiving, buf: &mut Vec<u8>, limits: Limits<'_>) -> Result<bool, ApiError> {
    while !r.recv.is_ended() {
        if r.filled == r.body.len() {
            if r.body.len() >= r.limit {
                return Err(ApiError::body_too_large(r.max_body));
            }
            let grown = r.body.len().saturating_mul(2).min(r.limit);
            let more = 2 * (grown - r.body.len()) as u64;
            let Some(extra) = limits.budget.charge(more) else {
                return Err(ApiError::server_busy(
                    "request bodies held in memory are at server.max_buffered_body_bytes",
                ));
            };
            if let Some(charge) = r.charge.as_mut() {
                charge.absorb(extra);
            }
            r.body.resize(grown, 0);
        }
        let Some(space) = r.body.get_mut(r.filled..) else {
            break;
        };
        let (used, produced) = r
            .recv
            .read(buf, space)
            .map_err(|e| ApiError::malformed_http(&e.to_string()))?;
        buf.drain(..used);
        r.filled += produced;
        if r.filled as u64 > r.max_body {
            return Err(ApiError::body_too_large(r.max_body));
        }
        if used == 0 && produced == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Index just past the empty line that ends a request head (CRLF or bare LF line endings).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = buf.get(i..)?.iter().position(|b| *b == b'\n') {
        let nl = i + pos;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n']) => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

fn finish(mut r: Receiving) -> Step {
    r.body.truncate(r.filled);
    match r.recv.proceed() {
        Ok(reply) => Step::Ready(Box::new(Complete {
            head_only: r.head.method == Method::HEAD,
            request: Request::from_parts(r.head, r.body),
            reply,
            http10: r.http10,
            close: r.close,
            charge: r.charge,
            share: None,
        })),
        Err(e) => Step::Reject(ApiError::malformed_http(&e.to_string())),
    }
}

/// RFC 9112 section 3.2: an HTTP/1.1 request has exactly one `Host`; no request has two.
fn check_host(headers: &HeaderMap, http10: bool) -> Result<(), &'static str> {
    match headers.get_all(header::HOST).iter().count() {
        0 if !http10 => Err("an HTTP/1.1 request needs a Host header"),
        0 | 1 => Ok(()),
        _ => Err("more than one Host header"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_with_crlf_and_bare_lf() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"),
            Some(27)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\nBODY"), Some(24));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(find_head_end(b""), None);
    }

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

    #[test]
    fn host_is_required_once_in_http_1_1_and_never_twice() {
        assert!(check_host(&headers(&[("host", "a")]), false).is_ok());
        assert!(check_host(&headers(&[]), false).is_err());
        assert!(
            check_host(&headers(&[]), true).is_ok(),
            "HTTP/1.0 may omit it"
        );
        assert!(check_host(&headers(&[("host", "a"), ("host", "b")]), true).is_err());
        assert!(check_host(&headers(&[("host", "a"), ("host", "a")]), false).is_err());
    }

    fn limits(budget: &BodyBudget) -> Limits<'_> {
        Limits {
            max_body: 1 << 20,
            budget,
        }
    }

    #[test]
    fn a_body_split_across_arrivals_is_ready_once_whole_and_charged_until_dropped() {
        let budget = BodyBudget::new(1 << 20);
        let mut receiving = None;
        let mut out = Vec::new();
        let mut buf = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello".to_vec();
        assert!(matches!(
            advance(&mut receiving, &mut buf, limits(&budget), &mut out),
            Step::NeedMore
        ));
        assert_eq!(budget.used(), 20, "twice the declared length");
        buf.extend_from_slice(b"worldGET /next");
        let Step::Ready(complete) = advance(&mut receiving, &mut buf, limits(&budget), &mut out)
        else {
            panic!("not ready")
        };
        assert_eq!(complete.request.body(), b"helloworld");
        assert_eq!(buf, b"GET /next", "the next request's bytes stay");
        assert!(out.is_empty());
        drop(complete);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn expect_continue_is_answered_before_the_body_and_chunked_bodies_decode() {
        let budget = BodyBudget::new(1 << 20);
        let mut receiving = None;
        let mut out = Vec::new();
        let mut buf = b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        assert!(matches!(
            advance(&mut receiving, &mut buf, limits(&budget), &mut out),
            Step::NeedMore
        ));
        assert!(out.starts_with(b"HTTP/1.1 100 Continue"), "{out:?}");
        buf.extend_from_slice(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let Step::Ready(complete) = advance(&mut receiving, &mut buf, limits(&budget), &mut out)
        else {
            panic!("not ready")
        };
        assert_eq!(complete.request.body(), b"abcde");
    }

    #[test]
    fn over_the_budget_or_the_limit_is_refused_before_reading() {
        let budget = BodyBudget::new(100);
        let mut out = Vec::new();
        let mut buf = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\n\r\n".to_vec();
        match advance(&mut None, &mut buf, limits(&budget), &mut out) {
            Step::Reject(e) => assert_eq!(e.status.as_u16(), 503),
            _ => panic!("accepted over the budget"),
        }
        let mut buf = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n".to_vec();
        match advance(&mut None, &mut buf, limits(&budget), &mut out) {
            Step::Reject(e) => assert_eq!(e.status.as_u16(), 413),
            _ => panic!("accepted over the limit"),
        }
        assert_eq!(budget.used(), 0);
        // A chunked body is charged as it grows and refused when the budget runs out.
        let budget = BodyBudget::new(40 * 1024);
        let mut receiving = None;
        let mut buf = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b'x'; 8 * 1024];
        for _ in 0..3 {
            buf.extend_from_slice(b"2000\r\n");
            buf.extend_from_slice(&chunk);
            buf.extend_from_slice(b"\r\n");
        }
        match advance(&mut receiving, &mut buf, limits(&budget), &mut out) {
            Step::Reject(e) => assert_eq!(e.status.as_u16(), 503),
            _ => panic!("grew past the budget"),
        }
        assert_eq!(budget.used(), 0, "the charge went with the request");
    }
}
