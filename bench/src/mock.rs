//! The backend for the benchmark: fast enough never to be the bottleneck. Plain HTTP/1.1 with
//! keep-alive, a thread per connection. `POST` with `"stream":true` gets 64 (or `events`)
//! events paced `pace_ms` apart, each stamped with its send time in nanoseconds since `epoch`;
//! `"model":"hang"` is never answered; anything else gets a fixed ~300-byte chat completion.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const REPLY: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-backend","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark backend."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}"#;

pub struct Mock {
    pub port: u16,
}

impl Mock {
    pub fn start(epoch: Instant) -> Mock {
        let listener = crate::procs::listen_deep(0);
        let port = listener.local_addr().expect("mock address").port();
        let epoch = Arc::new(epoch);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let epoch = Arc::clone(&epoch);
                std::thread::spawn(move || serve(conn, *epoch));
            }
        });
        Mock { port }
    }
}

fn serve(conn: TcpStream, epoch: Instant) {
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut writer = BufWriter::new(write_half);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&body);
        if text.contains("\"model\":\"hang\"") {
            // Holds the connection without a byte, for as long as a test runs.
            std::thread::sleep(Duration::from_secs(600));
            return;
        }
        let ok = if text.contains("\"stream\":true") {
            let events = field(&text, "\"events\":").unwrap_or(64);
            let pace = field(&text, "\"pace_ms\":").unwrap_or(20);
            stream(&mut writer, epoch, events, Duration::from_millis(pace))
        } else {
            write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{REPLY}",
                REPLY.len()
            )
            .and_then(|()| writer.flush())
            .is_ok()
        };
        if !ok {
            return;
        }
    }
}

fn field(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn stream<W: Write>(w: &mut W, epoch: Instant, events: u64, pace: Duration) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes())
        .and_then(|()| w.flush())
        .is_err()
    {
        return false;
    }
    for i in 0..events {
        std::thread::sleep(pace);
        let t = epoch.elapsed().as_nanos();
        let data = format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-backend\",\"t\":{t},\"i\":{i},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
        );
        if write!(w, "{:x}\r\n{data}\r\n", data.len())
            .and_then(|()| w.flush())
            .is_err()
        {
            return false;
        }
    }
    let done = "data: [DONE]\n\n";
    write!(w, "{:x}\r\n{done}\r\n0\r\n\r\n", done.len())
        .and_then(|()| w.flush())
        .is_ok()
}
