//! `cargo run --release -p bench` — what trae-proxy adds, side by side with nginx, on this
//! machine, with the method printed beside the figures. `--smoke` runs a short version (CI);
//! `--json PATH` writes the results (default `target/bench/results.json`); `--binary PATH`
//! measures that build instead of building one; `--load SECONDS CLIENTS` runs only the
//! throughput rounds (for a profiler attached to the printed process ids). Without `--binary`
//! the build we ship is measured, the static musl one, when this machine can build it (rustup's
//! musl target and its C compiler, as cross/build-static.sh installs them); otherwise the glibc
//! build, with a note.
//!
//! Everything runs on loopback: a fast Rust backend (mock.rs), trae-proxy's release build in
//! front of it, nginx in front of it the same way (TLS, upstream keep-alive, no buffering), and
//! this process as the load generator (client.rs).

mod client;
mod hostile;
mod mock;
mod procs;
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use client::{Client, Target};
use stats::{Summary, summarize, us};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}]}"#;

struct Plan {
    latency_requests: usize,
    throughput_rounds: usize,
    throughput_for: Duration,
    stream_events: u64,
    stream_rounds: usize,
    soak_for: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let json_path = args
        .windows(2)
        .find(|w| w[0] == "--json")
        .map(|w| PathBuf::from(&w[1]))
        .unwrap_or_else(|| root().join("target/bench/results.json"));
    let plan = if smoke {
        Plan {
            latency_requests: 200,
            throughput_rounds: 1,
            throughput_for: Duration::from_millis(300),
            stream_events: 16,
            stream_rounds: 1,
            soak_for: Duration::from_millis(500),
        }
    } else {
        Plan {
            latency_requests: 5000,
            // Five, as for streaming: with three, the same build measured 0.59x and 0.74x
            // nginx at 32 clients ten minutes apart (rounds 0.55, 0.81, 0.59).
            throughput_rounds: 5,
            throughput_for: Duration::from_secs(2),
            stream_events: 64,
            stream_rounds: 5,
            soak_for: Duration::from_secs(10),
        }
    };

    let (binary, build) = args
        .windows(2)
        .find(|w| w[0] == "--binary")
        .map(|w| (PathBuf::from(&w[1]), "given with --binary"))
        .unwrap_or_else(build_proxy);
    let epoch = Instant::now();
    let mock = mock::Mock::start(epoch);
    let dir = std::env::temp_dir().join(format!("trae-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let port = procs::free_port();
    procs::proxy_config(&dir, port, mock.port);

    // Start-up: the first start creates the CA and leaf; later ones find them.
    let cold = procs::start_proxy(&binary, &dir, port);
    let cold_startup = cold.startup;
    drop(cold);
    let mut warm = Vec::new();
    for _ in 0..5 {
        let s = procs::start_proxy(&binary, &dir, port);
        warm.push(s.startup);
    }
    let warm_startup = summarize(&mut warm).p50;
    let proxy = procs::start_proxy(&binary, &dir, port);
    let pid = proxy.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let (rss_idle, threads_idle) = procs::rss_and_threads(pid);

    let tls = client::tls_config(&dir.join("ca/ca.crt"));
    let direct = Target::Plain(mock.port);
    let ours = Target::Tls(proxy.port, Arc::clone(&tls));
    let nginx_bin = procs::find_nginx().or_else(procs::install_nginx);
    let nginx = nginx_bin
        .as_ref()
        .map(|bin| procs::start_nginx(bin, &dir, &dir.join("ca"), procs::free_port(), mock.port));
    let theirs = nginx
        .as_ref()
        .map(|n| Target::Tls(n.port, Arc::clone(&tls)));
    let our_pids = vec![pid];
    let nginx_pids = nginx
        .as_ref()
        .map(|n| procs::family(n.child.id()))
        .unwrap_or_default();
    if let Some(w) = args.windows(3).find(|w| w[0] == "--burst") {
        // `--burst N PACE_MS`: only N streams started at once, against both (for profiling).
        let (n, pace) = (w[1].parse().unwrap_or(256), w[2].parse().unwrap_or(20));
        hostile::burst(&ours, theirs.as_ref(), n, pace);
        return;
    }
    if let Some(w) = args.windows(2).find(|w| w[0] == "--memory") {
        // `--memory ROUNDS`: only the memory phase, repeated: a throughput round at 128
        // clients as in a full run, then 256 streams at once, and the RSS 6 s after.
        let rounds: usize = w[1].parse().unwrap_or(3);
        for round in 1..=rounds {
            throughput(&ours, &our_pids, 128, Duration::from_secs(2));
            let (before, _) = procs::rss_and_threads(pid);
            let sampler = sample_peak(pid);
            streams(&ours, 256, 64, 20, epoch);
            let (peak, _) = sampler.finish();
            std::thread::sleep(Duration::from_secs(6));
            let (after, threads) = procs::rss_and_threads(pid);
            println!(
                "round {round}: idle {rss_idle} KiB, before {before}, peak {peak}, 6 s after \
                 {after} ({} above idle), {threads} threads",
                after as i64 - rss_idle as i64
            );
        }
        return;
    }
    if let Some(w) = args.windows(3).find(|w| w[0] == "--load") {
        // `--load SECONDS CLIENTS`: only throughput rounds, trae-proxy then nginx, with their
        // process ids printed first (for `perf record -p`).
        let (secs, clients) = (w[1].parse().unwrap_or(10), w[2].parse().unwrap_or(32));
        eprintln!("trae-proxy pid {pid}, nginx pids {nginx_pids:?}");
        std::thread::sleep(Duration::from_secs(1));
        let length = Duration::from_secs(secs);
        let o = throughput(&ours, &our_pids, clients, length);
        let n = theirs.map(|t| throughput(&t, &nginx_pids, clients, length));
        for (name, r) in [("trae-proxy", Some(o)), ("nginx", n)] {
            if let Some(r) = r {
                println!(
                    "{name:>10}: {:>8.0} req/s, p99 {:>7.0} µs, CPU {:>5.1} µs/req ({:.0} kernel), {:.2} switches/req",
                    r.rps,
                    us(r.p99),
                    r.cpu_us,
                    r.system_us,
                    r.switches
                );
            }
        }
        return;
    }
    if args.iter().any(|a| a == "--hostile") {
        hostile::run(
            &ours,
            pid,
            theirs.as_ref().zip(nginx.as_ref().map(|n| n.child.id())),
            &machine(),
        );
        return;
    }

    eprintln!("1/5 latency at 1 client ...");
    let lat_direct = latency(&direct, plan.latency_requests);
    let lat_ours = latency(&ours, plan.latency_requests);
    let lat_nginx = theirs.as_ref().map(|t| latency(t, plan.latency_requests));

    eprintln!("2/5 throughput at 4, 32 and 128 clients ...");
    // Rounds of trae-proxy then nginx, back to back, so that a drift of this shared machine's
    // speed hits both; the round with the median ratio is the one reported.
    let mut throughput_rows = Vec::new();
    // 4 clients as well: where a thread per connection costs least, so that how the cost per
    // request grows with the number of connections shows beside nginx's.
    for clients in [4usize, 32, 128] {
        let mut rounds: Vec<_> = (0..plan.throughput_rounds)
            .map(|_| {
                let o = throughput(&ours, &our_pids, clients, plan.throughput_for);
                let n = theirs
                    .as_ref()
                    .map(|t| throughput(t, &nginx_pids, clients, plan.throughput_for));
                (o, n)
            })
            .collect();
        let ratio = |(o, n): &(Round, Option<Round>)| n.map_or(o.rps, |n| o.rps / n.rps);
        let ratios: Vec<f64> = rounds.iter().map(ratio).collect();
        rounds.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let (o, n) = rounds[rounds.len() / 2];
        throughput_rows.push((clients, o, n, ratios));
    }

    eprintln!(
        "3/5 streaming: 16 streams x {} events at 20 ms ...",
        plan.stream_events
    );
    // Rounds of direct, trae-proxy, nginx, for the same reason as the throughput rounds: a p99
    // of 1 024 delays is the 11th worst, and one hiccup of this shared machine moves it by
    // milliseconds for whichever target runs then (the direct run included). The round with the
    // median added p99 is reported; stalls and incomplete streams of every round count. Five
    // rounds, not three: with three, two hiccups in one run decided its result (three of six
    // runs in one afternoon, the direct backend's own p99 at 1-2 ms in two of them).
    let mut stream_rounds: Vec<_> = (0..plan.stream_rounds)
        .map(|_| {
            let direct = streams(&direct, 16, plan.stream_events, 20, epoch);
            let ours = streams(&ours, 16, plan.stream_events, 20, epoch);
            let nginx = theirs
                .as_ref()
                .map(|t| streams(t, 16, plan.stream_events, 20, epoch));
            (direct, ours, nginx)
        })
        .collect();
    let added_stream_p99 = |(direct, ours, _): &(StreamRun, StreamRun, Option<StreamRun>)| {
        ours.delay.p99.saturating_sub(direct.delay.p99)
    };
    let stream_added: Vec<Duration> = stream_rounds.iter().map(added_stream_p99).collect();
    let stream_stalls: usize = stream_rounds.iter().map(|(_, o, _)| o.stalls).sum();
    let stream_incomplete: usize = stream_rounds
        .iter()
        .map(|(_, o, _)| o.streams - o.completed)
        .sum();
    stream_rounds.sort_by_key(added_stream_p99);
    let (stream_direct, stream_ours, stream_nginx) =
        stream_rounds.swap_remove(stream_rounds.len() / 2);

    eprintln!("4/5 memory with 256 concurrent streams ...");
    let (rss_before_load, _) = procs::rss_and_threads(pid);
    let sampler = sample_peak(pid);
    let many = streams(&ours, 256, plan.stream_events, 20, epoch);
    let (rss_peak, threads_peak) = sampler.finish();
    // Workers beyond the two kept warm end after 5 s idle (src/server/pool.rs, IDLE_RETIRE).
    std::thread::sleep(Duration::from_secs(6));
    let (rss_after, threads_after) = procs::rss_and_threads(pid);

    eprintln!("5/5 soak: requests, streams, errors and disconnects ...");
    let soak = soak(&ours, pid, plan.soak_for);

    let size = std::fs::metadata(&binary).map_or(0, |m| m.len());
    let machine = machine();
    let added_p50 = lat_ours.p50.saturating_sub(lat_direct.p50);
    let added_p99 = lat_ours.p99.saturating_sub(lat_direct.p99);

    // ---- report
    println!("\ntrae-proxy benchmark — {machine}\n");
    println!(
        "Latency at 1 client, non-streaming chat completion ({} requests, keep-alive):",
        lat_ours.count
    );
    println!("  {:<34} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    row("backend direct (plain HTTP)", &lat_direct);
    row("trae-proxy (TLS)", &lat_ours);
    if let Some(n) = &lat_nginx {
        row("nginx (TLS, proxy_buffering off)", n);
    }
    println!(
        "  added by trae-proxy: p50 {:.0} µs, p99 {:.0} µs{}",
        us(added_p50),
        us(added_p99),
        lat_nginx.as_ref().map_or(String::new(), |n| format!(
            "; by nginx: p50 {:.0} µs, p99 {:.0} µs",
            us(n.p50.saturating_sub(lat_direct.p50)),
            us(n.p99.saturating_sub(lat_direct.p99))
        ))
    );
    println!(
        "\nThroughput ({} round(s) of {} s each; the round with the median ratio):",
        plan.throughput_rounds,
        plan.throughput_for.as_secs_f64()
    );
    for (clients, o, n, ratios) in &throughput_rows {
        println!(
            "  {clients:>3} clients: trae-proxy {:>8.0} req/s p99 {:>7.0} µs{}",
            o.rps,
            us(o.p99),
            n.map_or(String::new(), |n| format!(
                "   nginx {:>8.0} req/s p99 {:>7.0} µs   ratio {:.2} (rounds: {})",
                n.rps,
                us(n.p99),
                o.rps / n.rps,
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        );
        println!(
            "               per request: trae-proxy CPU {:>5.1} µs ({:.0} in the kernel), {:.2} context switches{}",
            o.cpu_us,
            o.system_us,
            o.switches,
            n.map_or(String::new(), |n| format!(
                "   nginx CPU {:>5.1} µs ({:.0} in the kernel), {:.2} context switches   CPU ratio {:.2}, p99 ratio {:.2}",
                n.cpu_us,
                n.system_us,
                n.switches,
                o.cpu_us / n.cpu_us,
                us(o.p99) / us(n.p99)
            ))
        );
    }
    println!(
        "\nStreaming, 16 streams x {} events at 20 ms, delay from backend send to client receipt \
         ({} round(s); the round with the median added p99):",
        plan.stream_events, plan.stream_rounds
    );
    stream_row("backend direct", &stream_direct);
    stream_row("trae-proxy", &stream_ours);
    if let Some(n) = &stream_nginx {
        stream_row("nginx", n);
    }
    println!(
        "  added p99 per round: {} µs; stalls in all rounds: {stream_stalls}; incomplete streams: {stream_incomplete}",
        stream_added
            .iter()
            .map(|d| format!("{:.0}", us(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "\nMemory (RSS) and threads: idle {} KiB / {} threads; before load {} KiB; peak during 256 streams \
         {} KiB / {} threads; 6 s after {} KiB / {} threads",
        rss_idle, threads_idle, rss_before_load, rss_peak, threads_peak, rss_after, threads_after
    );
    println!(
        "256 streams started at once: {} open at the same time, first event after p50 {:.1} ms / max {:.1} ms, \
         {} complete, {} stalls; {:.1} KiB of RSS per open stream",
        many.concurrent,
        many.first_event.p50.as_secs_f64() * 1e3,
        many.first_event.max.as_secs_f64() * 1e3,
        many.completed,
        many.stalls,
        rss_peak.saturating_sub(rss_before_load) as f64 / 256.0
    );
    println!(
        "Soak ({} s, {} requests incl. streams, 404s, disconnects): threads {} -> {}, open files {} -> {}, RSS {} -> {} KiB",
        plan.soak_for.as_secs_f64(),
        soak.requests,
        soak.before.1,
        soak.after.1,
        soak.before.2,
        soak.after.2,
        soak.before.0,
        soak.after.0
    );
    println!(
        "Start-up to the first completed TLS handshake: {:.1} ms (certificates present), {:.1} ms (first start, creating them)",
        warm_startup.as_secs_f64() * 1e3,
        cold_startup.as_secs_f64() * 1e3
    );
    println!(
        "Binary: {} bytes ({:.2} MiB), {} ({build})",
        size,
        size as f64 / 1048576.0,
        binary.display()
    );

    let at32 = throughput_rows
        .iter()
        .find(|(clients, ..)| *clients == 32)
        .expect("a round at 32 clients");
    let budgets = [
        ("added latency p50 <= 60 us", us(added_p50) <= 60.0),
        ("added latency p99 <= 200 us", us(added_p99) <= 200.0),
        (
            "throughput at 32 clients >= 0.75x nginx",
            at32.2.is_none_or(|n| at32.1.rps >= 0.75 * n.rps),
        ),
        (
            "CPU per request at 32 clients <= 1.5x nginx",
            at32.2.is_none_or(|n| at32.1.cpu_us <= 1.5 * n.cpu_us),
        ),
        (
            "p99 at 32 clients <= 2x nginx",
            at32.2.is_none_or(|n| at32.1.p99 <= 2 * n.p99),
        ),
        (
            "stream p99 added delay <= 1 ms",
            (stream_ours
                .delay
                .p99
                .saturating_sub(stream_direct.delay.p99))
                <= Duration::from_millis(1),
        ),
        ("zero stalls", stream_stalls == 0 && many.stalls == 0),
        (
            "all streams complete (16 per round; 256 at once, all open together)",
            stream_incomplete == 0 && many.completed == 256 && many.concurrent == 256,
        ),
        ("RSS idle <= 4 MiB", rss_idle <= 4096),
        ("RSS during 256 streams <= 32 MiB", rss_peak <= 32 * 1024),
        (
            "RSS after load within 2 MiB of idle",
            rss_after <= rss_idle + 2048,
        ),
        (
            "start-up <= 50 ms",
            warm_startup <= Duration::from_millis(50),
        ),
        (
            "soak: same threads and open files",
            soak.before.1 == soak.after.1 && soak.after.2 <= soak.before.2,
        ),
    ];
    println!("\nBudgets:");
    for (name, ok) in &budgets {
        println!("  [{}] {name}", if *ok { "met" } else { "MISSED" });
    }
    println!("\n{METHOD}");

    let report = json!({
        "machine": machine,
        "smoke": smoke,
        "latency_us": {
            "direct": summary_json(&lat_direct),
            "trae_proxy": summary_json(&lat_ours),
            "nginx": lat_nginx.as_ref().map(summary_json),
            "added_p50": us(added_p50),
            "added_p99": us(added_p99),
        },
        "throughput": throughput_rows.iter().map(|(c, o, n, ratios)| json!({
            "clients": c, "trae_proxy_rps": o.rps, "trae_proxy_p99_us": us(o.p99),
            "trae_proxy_cpu_us_per_request": o.cpu_us,
            "trae_proxy_system_cpu_us_per_request": o.system_us,
            "trae_proxy_context_switches_per_request": o.switches,
            "nginx_rps": n.map(|n| n.rps), "nginx_p99_us": n.map(|n| us(n.p99)),
            "nginx_cpu_us_per_request": n.map(|n| n.cpu_us),
            "nginx_system_cpu_us_per_request": n.map(|n| n.system_us),
            "nginx_context_switches_per_request": n.map(|n| n.switches),
            "round_ratios": n.map(|_| ratios),
        })).collect::<Vec<Value>>(),
        "streaming_delay_us": {
            "direct": summary_json(&stream_direct.delay),
            "trae_proxy": summary_json(&stream_ours.delay),
            "nginx": stream_nginx.as_ref().map(|s| summary_json(&s.delay)),
            "trae_proxy_stalls": stream_stalls,
            "trae_proxy_incomplete": stream_incomplete,
            "round_added_p99": stream_added.iter().map(|d| us(*d)).collect::<Vec<f64>>(),
        },
        "memory_kib": {"idle": rss_idle, "peak_256_streams": rss_peak, "after": rss_after},
        "threads": {"idle": threads_idle, "peak": threads_peak, "after": threads_after},
        "streams_256": {"completed": many.completed, "open_at_once": many.concurrent,
            "first_event_ms": {"p50": many.first_event.p50.as_secs_f64() * 1e3,
                               "max": many.first_event.max.as_secs_f64() * 1e3}},
        "soak": {"requests": soak.requests, "before": soak.before, "after": soak.after},
        "startup_ms": {"warm": warm_startup.as_secs_f64() * 1e3, "cold": cold_startup.as_secs_f64() * 1e3},
        "binary_bytes": size,
        "build": build,
        "budgets": budgets.iter().map(|(n, ok)| json!({"budget": n, "met": ok})).collect::<Vec<Value>>(),
    });
    if let Some(parent) = json_path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .expect("write JSON");
    println!("JSON: {}", json_path.display());
    drop(nginx);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

const METHOD: &str = "Method: everything on loopback on this machine. The backend is an in-process Rust \
HTTP/1.1 server (keep-alive, ~300-byte JSON reply; streams stamp each event with its send time). \
The load generator is this process: one keep-alive connection per client thread, TLS 1.3 to \
trae-proxy and nginx (both with the proxy's ECDSA certificate), plain HTTP straight to the backend. \
Latency: sequential requests on one connection after a warm-up; 'added' is the difference of the \
percentiles to the direct run. Throughput: N client threads for a fixed time, requests completed \
per second and the p99 of their latencies, in rounds of trae-proxy then nginx (the round with the \
median ratio is shown); load generator, proxy and backend share the cores. \
Streaming: delay from the backend's send stamp to the client's read, in rounds of direct, \
trae-proxy, nginx (the round with the median added p99 is shown; stalls and unfinished streams of \
every round count); a stall is a gap over 200 ms (10x the pacing). Memory: VmRSS and Threads from /proc, peak sampled every 50 ms, 'after' taken \
6 s after the load, once idle workers have ended. trae-proxy starts a worker per request in flight (a worker \
serves one request at a time and 256 concurrent streams get 256; they start on demand). The \
proxy runs its default config. CPU per request: the server's user + system time over a round \
(/proc/PID/stat; nginx: master and workers) divided by the requests done; context switches \
likewise, summed over every thread (/proc/PID/task/*/status). \
Start-up: from spawn until a TLS handshake verified against the CA completes (the proxy binds \
before it creates missing certificates, so a TCP connect alone would finish too early). \
nginx: worker_processes auto, upstream keepalive 256, proxy_buffering off, access_log off.";

fn row(name: &str, s: &Summary) {
    println!("  {name:<34} {:>10.0} {:>10.0}", us(s.p50), us(s.p99));
}

fn stream_row(name: &str, s: &StreamRun) {
    println!(
        "  {name:<16} p50 {:>7.0} µs  p99 {:>7.0} µs  max {:>7.0} µs  stalls {}  complete {}/{}",
        us(s.delay.p50),
        us(s.delay.p99),
        us(s.delay.max),
        s.stalls,
        s.completed,
        s.streams
    );
}

fn summary_json(s: &Summary) -> Value {
    json!({"p50": us(s.p50), "p99": us(s.p99), "max": us(s.max), "n": s.count})
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the static musl binary we ship when this machine can, else the glibc one: their
/// memory differs by 1.5 MiB idle (the shared C library) and more after a burst (README,
/// Performance), so the budgets are the static build's.
fn build_proxy() -> (PathBuf, &'static str) {
    let target = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    if can_build_static(&target) && cargo_build(&["--target", &target]) {
        return (
            root().join(format!("target/{target}/release/trae-proxy")),
            "static musl build",
        );
    }
    eprintln!(
        "note: measuring the glibc build: the static one needs `rustup target add {target}` and \
         its C compiler (cross/build-static.sh INSTALL_DEPS=1 installs both). Its memory figures \
         differ from the static build's (README, Performance)."
    );
    assert!(cargo_build(&[]), "building trae-proxy failed");
    (root().join("target/release/trae-proxy"), "glibc build")
}

/// rustup's standard library for `target`, and the C compiler .cargo/config.toml names for it
/// (ring compiles C).
fn can_build_static(target: &str) -> bool {
    let has_std = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|dir| has_std_rlib(dir.trim()));
    let cc = match std::env::consts::ARCH {
        "x86_64" => "musl-gcc",
        _ => "aarch64-linux-gnu-gcc",
    };
    let has_cc = Command::new(cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    has_std && has_cc
}

/// rustc prints the directory whether or not the target is installed.
fn has_std_rlib(dir: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })
    })
}

fn cargo_build(extra: &[&str]) -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "trae-proxy"])
        .args(extra)
        .current_dir(root())
        .status()
        .is_ok_and(|s| s.success())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    format!("{cpus} cores, {model}, {} GiB", mem_kib / 1024 / 1024)
}

fn latency(target: &Target, n: usize) -> Summary {
    let mut client = Client::connect(target).expect("connect");
    for _ in 0..n / 10 {
        client.request(CHAT).expect("warm-up request");
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| client.request(CHAT).expect("request"))
        .collect();
    summarize(&mut samples)
}

/// One throughput round: requests per second, their p99, and what the server process(es) spent
/// per request in CPU time and context switches.
#[derive(Clone, Copy)]
struct Round {
    rps: f64,
    p99: Duration,
    cpu_us: f64,
    /// The part of `cpu_us` spent in the kernel (system time): TCP, wake-ups, scheduling.
    system_us: f64,
    switches: f64,
}

/// A round with `clients` connections for `length`; `pids` are the server's processes.
fn throughput(target: &Target, pids: &[u32], clients: usize, length: Duration) -> Round {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let target = target.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut client = Client::connect(&target).expect("connect");
                client.request(CHAT).expect("warm-up");
                barrier.wait();
                let end = Instant::now() + length;
                let mut samples = Vec::new();
                while Instant::now() < end {
                    samples.push(client.request(CHAT).expect("request"));
                }
                samples
            })
        })
        .collect();
    barrier.wait();
    let (cpu, switches) = (procs::cpu_seconds(pids), procs::context_switches(pids));
    let started = Instant::now();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let requests = all.len().max(1) as f64;
    let (user, system) = {
        let after = procs::cpu_seconds(pids);
        (after.0 - cpu.0, after.1 - cpu.1)
    };
    Round {
        rps: all.len() as f64 / elapsed,
        p99: summarize(&mut all).p99,
        cpu_us: (user + system) * 1e6 / requests,
        system_us: system * 1e6 / requests,
        switches: procs::context_switches(pids).saturating_sub(switches) as f64 / requests,
    }
}

struct StreamRun {
    streams: usize,
    completed: usize,
    stalls: usize,
    delay: Summary,
    /// Most streams open at the same moment (first event received, last not yet).
    concurrent: usize,
    /// From sending the request to the first event.
    first_event: Summary,
}

fn streams(target: &Target, count: usize, events: u64, pace_ms: u64, epoch: Instant) -> StreamRun {
    let body = format!(
        r#"{{"model":"gpt-4o","stream":true,"events":{events},"pace_ms":{pace_ms},"messages":[]}}"#
    );
    let delays = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (target, body, delays, barrier) = (
                target.clone(),
                body.clone(),
                Arc::clone(&delays),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                let mut client = Client::connect(&target).ok()?;
                barrier.wait();
                let sent = Instant::now();
                let mut first: Option<Instant> = None;
                let mut mine = Vec::new();
                let mut last: Option<Instant> = None;
                let mut stalls = 0;
                let mut seen = 0;
                client
                    .stream(&body, |at, data| {
                        if let Some(t) = data.split("\"t\":").nth(1).and_then(|r| {
                            r.split(|c: char| !c.is_ascii_digit())
                                .next()?
                                .parse::<u64>()
                                .ok()
                        }) {
                            first.get_or_insert(at);
                            let stamped = epoch + Duration::from_nanos(t);
                            mine.push(at.saturating_duration_since(stamped));
                            seen += 1;
                            if last.is_some_and(|l| at - l > Duration::from_millis(200)) {
                                stalls += 1;
                            }
                            last = Some(at);
                        }
                        true
                    })
                    .ok()?;
                if let Ok(mut d) = delays.lock() {
                    d.extend(mine);
                }
                let open = first
                    .zip(last)
                    .map(|(f, l)| (f.saturating_duration_since(sent), f, l));
                Some((seen == events as usize, stalls, open))
            })
        })
        .collect();
    type Outcome = (bool, usize, Option<(Duration, Instant, Instant)>);
    let results: Vec<Option<Outcome>> = handles
        .into_iter()
        .map(|h| h.join().ok().flatten())
        .collect();
    let mut delays = delays.lock().map(|d| d.clone()).unwrap_or_default();
    let spans: Vec<(Duration, Instant, Instant)> =
        results.iter().flatten().filter_map(|r| r.2).collect();
    let mut first_event: Vec<Duration> = spans.iter().map(|s| s.0).collect();
    StreamRun {
        streams: count,
        completed: results
            .iter()
            .filter(|r| r.is_some_and(|(done, _, _)| done))
            .count(),
        stalls: results.iter().flatten().map(|(_, s, _)| s).sum(),
        delay: summarize(&mut delays),
        concurrent: most_at_once(spans.iter().map(|s| (s.1, s.2))),
        first_event: summarize(&mut first_event),
    }
}

/// The most intervals that overlap at one moment.
fn most_at_once(spans: impl Iterator<Item = (Instant, Instant)>) -> usize {
    let mut edges: Vec<(Instant, i64)> = spans.flat_map(|(a, b)| [(a, 1), (b, -1)]).collect();
    // At equal instants, ends before starts: touching spans do not overlap.
    edges.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    let mut open = 0i64;
    let mut most = 0i64;
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

struct Sampler {
    stop: Arc<Mutex<bool>>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

fn sample_peak(pid: u32) -> Sampler {
    let stop = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let mut peak = (0, 0);
        while !*flag.lock().unwrap_or_else(|p| p.into_inner()) {
            let (rss, threads) = procs::rss_and_threads(pid);
            peak = (peak.0.max(rss), peak.1.max(threads));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    Sampler { stop, handle }
}

impl Sampler {
    fn finish(self) -> (u64, u64) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.handle.join().unwrap_or((0, 0))
    }
}

struct Soak {
    requests: usize,
    /// (RSS KiB, threads, open files)
    before: (u64, u64, usize),
    after: (u64, u64, usize),
}

/// A mixed load for `length`, then the process must look as it did before.
fn soak(target: &Target, pid: u32, length: Duration) -> Soak {
    let snapshot = || {
        let (rss, threads) = procs::rss_and_threads(pid);
        (rss, threads, procs::open_files(pid))
    };
    let before = snapshot();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let target = target.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + length;
                let mut n = 0;
                while Instant::now() < end {
                    let Ok(mut client) = Client::connect(&target) else { continue };
                    let _ = match (i + n) % 4 {
                        0 => client.request(CHAT).map(|_| ()),
                        1 => client
                            .request(r#"{"model":"no-such-model","messages":[]}"#)
                            .map(|_| ()),
                        2 => client.stream(
                            r#"{"model":"gpt-4o","stream":true,"events":5,"pace_ms":2,"messages":[]}"#,
                            |_, _| true,
                        ),
                        // Hang up in the middle of a stream.
                        _ => client.stream(
                            r#"{"model":"gpt-4o","stream":true,"events":50,"pace_ms":5,"messages":[]}"#,
                            |_, data| !data.contains("\"i\":3,"),
                        ),
                    };
                    n += 1;
                }
                n
            })
        })
        .collect();
    let requests = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    // Abandoned streams end at the backend's pace; idle connections close; workers retire 5 s
    // after their last request (the last of a burst 0.2 s later, once it has trimmed the
    // allocator), so a leak is what is still there after 8 s.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut after = snapshot();
    while (after.1 != before.1 || after.2 > before.2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = snapshot();
    }
    Soak {
        requests,
        before,
        after,
    }
}
