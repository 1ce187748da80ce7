//! `bench --hostile`: the hostile and faulty peers of tests/hostile/ at full size, against
//! trae-proxy (default config) and nginx (same certificate, same backend) in turn. Each scenario
//! runs its peers, then measures what an ordinary client gets meanwhile: 20 requests, each on a
//! new connection, with a 10 s limit each. Prints a table; writes target/bench/hostile.json.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::{Value, json};

use crate::client::{Client, Target};
use crate::procs;
use crate::stats::summarize;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}]}"#;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A raw TLS connection, for peers that misbehave (write half a request, never read).
fn tls(target: &Target) -> Option<Tls> {
    tls_from(target, [127, 0, 0, 1])
}

/// The same from another loopback address: another host of the LAN, with its own share.
fn tls_from(target: &Target, source: [u8; 4]) -> Option<Tls> {
    let Target::Tls(port, config) = target else {
        return None;
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket
        .bind(&std::net::SocketAddr::from((source, 0)).into())
        .ok()?;
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], *port)).into())
        .ok()?;
    let sock: TcpStream = socket.into();
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let name = ServerName::try_from("api.openai.com").ok()?;
    let conn = ClientConnection::new(Arc::clone(config), name).ok()?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    Some(tls)
}

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What an ordinary client got while a scenario ran.
struct Served {
    ok: usize,
    of: usize,
    p50_ms: f64,
    max_ms: f64,
}

impl Served {
    fn text(&self) -> String {
        format!(
            "{}/{} served, p50 {:.0} ms, max {:.0} ms",
            self.ok, self.of, self.p50_ms, self.max_ms
        )
    }
}

/// 20 ordinary requests, one after another, each on a new connection (10 s limit each).
fn ordinary(target: &Target) -> Served {
    let mut times = Vec::new();
    let mut ok = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let done = std::thread::scope(|s| {
            let h = s.spawn(|| {
                Client::connect(target)
                    .and_then(|mut c| c.request(CHAT))
                    .is_ok()
            });
            let deadline = started + Duration::from_secs(10);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            h.is_finished() && h.join().unwrap_or(false)
        });
        if done {
            ok += 1;
        }
        times.push(started.elapsed());
    }
    let s = summarize(&mut times);
    Served {
        ok,
        of: 20,
        p50_ms: s.p50.as_secs_f64() * 1e3,
        max_ms: s.max.as_secs_f64() * 1e3,
    }
}

/// Peak RSS (KiB) of `pids` while `work` runs.
fn peak_rss<T>(pids: &[u32], work: impl FnOnce() -> T) -> (T, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pids) = (Arc::clone(&stop), pids.to_vec());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                let rss: u64 = pids.iter().map(|p| procs::rss_and_threads(*p).0).sum();
                peak = peak.max(rss);
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let result = work();
    stop.store(true, Ordering::Relaxed);
    (result, sampler.join().unwrap_or(0))
}

/// Starts `count` misbehaving peers, each running `peer` until `stop`; waits `settle`, measures
/// ordinary clients, stops the peers.
fn with_peers(
    target: &Target,
    count: usize,
    settle: Duration,
    peer: impl Fn(&Target, &AtomicBool) + Send + Sync + 'static,
) -> Served {
    let stop = Arc::new(AtomicBool::new(false));
    let peer = Arc::new(peer);
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (target, stop, peer) = (target.clone(), Arc::clone(&stop), Arc::clone(&peer));
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || peer(&target, &stop))
                .ok()
        })
        .collect();
    std::thread::sleep(settle);
    let served = ordinary(target);
    stop.store(true, Ordering::Relaxed);
    for h in handles.into_iter().flatten() {
        let _ = h.join();
    }
    served
}

fn slow_bodies(target: &Target) -> Served {
    with_peers(target, 70, Duration::from_secs(2), |target, stop| {
        let Some(mut tls) = tls(target) else { return };
        let mut head = post(&" ".repeat(1000));
        head.truncate(head.len() - 1000);
        if tls.write_all(&head).is_err() {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            if tls.write_all(b" ").is_err() {
                return;
            }
            for _ in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

fn slow_readers(target: &Target, pids: &[u32]) -> (Served, u64) {
    peak_rss(pids, || {
        with_peers(target, 80, Duration::from_secs(2), |target, stop| {
            let Some(tls) = tls(target) else { return };
            let mut reader = BufReader::with_capacity(64, tls);
            let body =
                r#"{"model":"gpt-4o","stream":true,"events":4000,"pace_ms":1,"messages":[]}"#;
            if reader.get_mut().write_all(&post(body)).is_err() {
                return;
            }
            let mut line = String::new();
            // A line every half second: far slower than the stream comes.
            while !stop.load(Ordering::Relaxed) {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    })
}

/// The 70 come from another host of the LAN (an IDE retrying against an overloaded API). Their
/// requests stay in flight on the proxy until `first_byte_timeout` (300 s), after their client
/// gave up, and count against that host's `max_requests_per_client`: from the address of the
/// later scenarios' clients they would take 70 of its 1,024 (the 1,000-stream row then had 954).
fn hung_backend(target: &Target) -> Served {
    with_peers(target, 70, Duration::from_secs(1), |target, _| {
        let Some(mut tls) = tls_from(target, [127, 0, 0, 250]) else {
            return;
        };
        if tls
            .write_all(&post(r#"{"model":"hang","messages":[]}"#))
            .is_err()
        {
            return;
        }
        let _ = tls.sock.set_read_timeout(Some(Duration::from_secs(15)));
        let mut byte = [0u8; 1];
        let _ = tls.read(&mut byte);
    })
}

/// `count` idle keep-alive connections from 200 loopback addresses (a LAN's clients), then
/// ordinary clients.
fn idle_flood(target: &Target, count: usize) -> Served {
    let held: Vec<Client> = std::thread::scope(|s| {
        let chunks: Vec<_> = (0..8u8)
            .map(|chunk| {
                s.spawn(move || {
                    (0..count / 8)
                        .filter_map(|i| {
                            let host = 2 + (usize::from(chunk) * (count / 8) + i) % 200;
                            let source = [127, 0, 0, u8::try_from(host).unwrap_or(2)];
                            let mut c = Client::connect_from(target, source).ok()?;
                            c.request(CHAT).ok()?;
                            Some(c)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    eprintln!("    {} idle keep-alive connections held", held.len());
    let served = ordinary(target);
    drop(held);
    served
}

fn big_bodies(target: &Target, pids: &[u32]) -> (String, u64) {
    let body = Arc::new(format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(30_000_000)
    ));
    let start = Arc::new(Barrier::new(16));
    let (statuses, peak) = peak_rss(pids, || {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (target, body, start) = (target.clone(), Arc::clone(&body), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut tls = tls(&target)?;
                    start.wait();
                    tls.write_all(&post(&body)).ok()?;
                    let mut reader = BufReader::new(tls);
                    let mut line = String::new();
                    reader.read_line(&mut line).ok()?;
                    line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect::<Vec<_>>()
    });
    let count = |code: u16| statuses.iter().filter(|s| **s == Some(code)).count();
    let text = format!(
        "200: {}, 503: {}, other/none: {}",
        count(200),
        count(503),
        16 - count(200) - count(503)
    );
    (text, peak)
}

/// `count` streams of `events` events `pace_ms` apart, all started at once.
fn many_streams(target: &Target, count: usize, events: u64, pace_ms: u64) -> String {
    let run = crate::streams(target, count, events, pace_ms, Instant::now());
    format!(
        "{} open at once, first event p50 {:.0} ms / max {:.0} ms, {}/{count} complete",
        run.concurrent,
        run.first_event.p50.as_secs_f64() * 1e3,
        run.first_event.max.as_secs_f64() * 1e3,
        run.completed
    )
}

/// `count` 4 s streams started at once against trae-proxy, then nginx.
pub fn burst(ours: &Target, nginx: Option<&Target>, count: usize, pace_ms: u64) {
    let events = 4000 / pace_ms.max(1);
    println!("trae-proxy: {}", many_streams(ours, count, events, pace_ms));
    if let Some(n) = nginx {
        std::thread::sleep(Duration::from_secs(2));
        println!("nginx:      {}", many_streams(n, count, events, pace_ms));
    }
}

/// Runs every scenario against trae-proxy, then nginx, and prints the table.
pub fn run(ours: &Target, our_pid: u32, nginx: Option<(&Target, u32)>, machine: &str) {
    let targets: Vec<(&str, &Target, Vec<u32>)> =
        std::iter::once(("trae-proxy", ours, vec![our_pid]))
            .chain(nginx.map(|(t, pid)| ("nginx", t, procs::family(pid))))
            .collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |name: &str, results: Vec<String>| rows.push((name.to_owned(), results));
    let each = |f: &dyn Fn(&Target, &[u32]) -> String| -> Vec<String> {
        targets
            .iter()
            .map(|(name, t, pids)| {
                eprintln!("  {name} ...");
                let r = f(t, pids);
                // Let the server settle (peers' connections close, workers end) before the next.
                std::thread::sleep(Duration::from_secs(2));
                r
            })
            .collect()
    };
    eprintln!("hostile 1/6: 70 clients sending their request body a byte every 2 s");
    add(
        "70 clients sending their body a byte every 2 s",
        each(&|t, _| slow_bodies(t).text()),
    );
    eprintln!("hostile 2/6: 80 clients reading a stream slowly");
    add(
        "80 clients reading a stream slowly (peak RSS)",
        each(&|t, p| {
            let (s, rss) = slow_readers(t, p);
            format!("{}; {} MiB", s.text(), rss / 1024)
        }),
    );
    eprintln!("hostile 3/6: 70 requests to a hung backend");
    add(
        "70 requests to a hung backend",
        each(&|t, _| hung_backend(t).text()),
    );
    eprintln!("hostile 4/6: 4200 idle keep-alive connections (above trae-proxy's 4096)");
    add(
        "4200 idle keep-alive connections from 200 addresses, then new clients",
        each(&|t, _| idle_flood(t, 4200).text()),
    );
    eprintln!("hostile 5/6: 256 concurrent 4 s streams, then 1000");
    // Events 20 ms apart, as a fast model streams; a thousand of those would be 50 000 events a
    // second through TLS on this machine's two cores (shared with the backend and this load
    // generator), so the thousand come 100 ms apart.
    add(
        "256 concurrent 4 s streams (an event every 20 ms)",
        each(&|t, _| many_streams(t, 256, 200, 20)),
    );
    add(
        "1000 concurrent 4 s streams (an event every 100 ms)",
        each(&|t, _| many_streams(t, 1000, 40, 100)),
    );
    eprintln!("hostile 6/6: 16 concurrent 30 MB request bodies");
    add(
        "16 concurrent 30 MB request bodies (answers; peak RSS)",
        each(&|t, p| {
            let (s, rss) = big_bodies(t, p);
            format!("{s}; {} MiB", rss / 1024)
        }),
    );

    println!("\nHostile and faulty peers — {machine}\n");
    println!(
        "| scenario | {} |",
        targets.iter().map(|t| t.0).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(targets.len()));
    for (name, results) in &rows {
        println!("| {name} | {} |", results.join(" | "));
    }
    println!(
        "\nOrdinary client: 20 chat completions after the peers started, each on a new TLS \
         connection, 10 s limit each. trae-proxy on its default config; nginx as in the main \
         benchmark (proxy_buffering off, client_max_body_size 32m, request buffering on)."
    );
    let report: Value = json!({
        "machine": machine,
        "targets": targets.iter().map(|t| t.0).collect::<Vec<_>>(),
        "rows": rows.iter().map(|(n, r)| json!({"scenario": n, "results": r})).collect::<Vec<_>>(),
    });
    let path = crate::root().join("target/bench/hostile.json");
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    println!("JSON: {}", path.display());
}
