//! Errors and anything unexpected (audio, plain text): the backend's own status and body,
//! copied as they come, a flush per read.

use std::io::{self, Read};

use http::header;

use super::{Head, Job, READ_BUF};
use crate::api::context::Ctx;
use crate::server::{After, BodyStream, Responder};
use crate::upstream;

pub fn answer(
    mut head: Head,
    body: &mut impl Read,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    if let Some(ct) = head.content_type {
        head.headers.push((header::CONTENT_TYPE, ct));
    }
    let mut sink = responder.stream(head.status, head.headers)?;
    let copied = copy(body, &mut sink, job.backend);
    ctx.bytes = sink.bytes;
    match copied {
        Ok(()) => sink.finish(),
        // The client must not take a cut body for a whole one.
        Err(()) => Ok(sink.abort()),
    }
}

fn copy(body: &mut impl Read, sink: &mut BodyStream<'_>, backend: &str) -> Result<(), ()> {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        match body.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => sink.write(&buf[..n]).map_err(|_| ())?,
            Err(e) => {
                // Logged there; the status line has gone out already.
                upstream::classify_read(backend, &e);
                return Err(());
            }
        }
    }
}
