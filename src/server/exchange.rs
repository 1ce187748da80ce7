//! Answering one request that [`intake`](super::intake) has received whole: the application
//! gets the request and a [`Responder`] over the blocking client stream, and the body's memory
//! charge is given back when it is done.

use std::io::{self, Write};
use std::net::SocketAddr;

use http::Request;

use super::intake::Complete;
use super::respond::{After, Responder, Transport, raw_error};
use crate::api_error::ApiError;

/// The application: answers one request through its responder.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
    ) -> io::Result<After>;

    /// The calling worker has had nothing to do for a moment (pool.rs, `RELEASE_AFTER`), or
    /// for a while longer again (`IDLE_RETIRE`), and waits for a connection: whatever it keeps
    /// for itself (backend connections) should go where other workers find it, and what has
    /// been kept too long be let go.
    fn idle(&self) {}
}

/// Hands a complete request to `handler` with the right to answer it on `io`.
pub fn serve<S: Write>(
    io: &mut S,
    complete: Complete,
    peer: SocketAddr,
    transport: Transport,
    handler: &dyn Handler,
) -> io::Result<After> {
    let Complete {
        request,
        reply,
        http10,
        close,
        head_only,
        charge,
        share,
    } = complete;
    let responder = Responder::new(io, reply, http10, close, head_only, transport).holding(share);
    let after = handler.handle(request, peer, responder);
    // The body and its rewritten copy are gone by now.
    drop(charge);
    after
}

/// Answers with an error on a blocking stream, for a request that could not be received.
pub fn reject<S: Write>(io: &mut S, err: &ApiError) -> io::Result<After> {
    io.write_all(&raw_error(err))?;
    io.flush()?;
    Ok(After::Close)
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
    use crate::server::intake::{Limits, Step, advance};
    use crate::server::limits::BodyBudget;

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

    /// Receives and answers requests from `bytes` as a connection would, as long as complete
    /// requests remain; returns what was written to the client.
    fn serve_bytes(bytes: Vec<u8>, max_body: u64, handler: &dyn Handler) -> Vec<u8> {
        let mut buf = bytes;
        let mut io = Duplex {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
        };
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let budget = BodyBudget::new(1 << 30);
        let limits = Limits {
            max_body,
            budget: &budget,
        };
        for _ in 0..8 {
            let mut receiving = None;
            let mut continue_out = Vec::new();
            let step = advance(&mut receiving, &mut buf, limits, &mut continue_out);
            io.output.extend_from_slice(&continue_out);
            let after = match step {
                Step::NeedMore => break,
                Step::Reject(e) => reject(&mut io, &e),
                Step::Ready(complete) => serve(&mut io, *complete, peer, Transport::Plain, handler),
            };
            match after {
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
        for size in [1usize, 4095, 4096, 4097, 70_000] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
            let mut by_length =
                format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n")
                    .into_bytes();
            by_length.extend_from_slice(&body);
            let mut chunked =
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in body.chunks(777) {
                chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                chunked.extend_from_slice(piece);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            for input in [by_length, chunked] {
                let out = serve_bytes(input, 1 << 20, &Measure);
                let out = String::from_utf8_lossy(&out);
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
            let out = serve_bytes(input, 4096, &Echo);
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1."));
        }

        #[test]
        fn request_shaped_input_gets_http_or_nothing(input in request_like()) {
            let out = serve_bytes(input, 4096, &Echo);
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1."), "{}", String::from_utf8_lossy(&out));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};

    use http::StatusCode;

    use super::*;
    use crate::server::intake::{Limits, Step, advance};
    use crate::server::limits::{BodyBudget, Clients};

    /// Answers (whole or streamed), then — as the proxy logs and counts the request — checks
    /// whether its client could start another request now.
    struct AnswerThenTry {
        clients: Arc<Clients>,
        stream: bool,
        could: Mutex<Option<bool>>,
    }

    impl Handler for AnswerThenTry {
        fn handle(
            &self,
            _: Request<Vec<u8>>,
            peer: SocketAddr,
            r: Responder<'_>,
        ) -> io::Result<After> {
            let after = if self.stream {
                let mut body = r.stream(StatusCode::OK, Vec::new())?;
                body.write(b"data: x\n\n")?;
                body.finish()
            } else {
                r.send(StatusCode::OK, Vec::new(), b"ok")
            };
            let next = self.clients.start_request(peer.ip());
            *self.could.lock().unwrap() = Some(next.is_some());
            after
        }
    }

    #[test]
    fn a_clients_share_is_free_once_its_response_is_written_before_the_handler_returns() {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        for stream in [false, true] {
            // One request in flight per client: a client that waits for each answer before it
            // asks again must never be refused (tests/it/idle.rs got a 429 under qemu).
            let clients = Clients::new(10, 1);
            let budget = BodyBudget::new(1 << 20);
            let limits = Limits {
                max_body: 1024,
                budget: &budget,
            };
            let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
            let Step::Ready(mut complete) = advance(&mut None, &mut buf, limits, &mut Vec::new())
            else {
                panic!("request not complete")
            };
            complete.share = clients.start_request(IpAddr::from(Ipv4Addr::LOCALHOST));
            assert!(complete.share.is_some());
            let handler = AnswerThenTry {
                clients: Arc::clone(&clients),
                stream,
                could: Mutex::new(None),
            };
            let mut out = Vec::new();
            let after = serve(&mut out, *complete, peer, Transport::Tls, &handler).unwrap();
            assert!(matches!(after, After::KeepAlive));
            assert!(out.starts_with(b"HTTP/1.1 200"));
            assert_eq!(
                *handler.could.lock().unwrap(),
                Some(true),
                "streamed: {stream}: the share was still taken after the response"
            );
        }
    }
}
