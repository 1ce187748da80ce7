//! Clients that stop reading what they asked for.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::client::{chat_request, connect, roundtrip};
use crate::harness::rss_kib;
use crate::{proxy_with, quick_chat};

#[test]
fn clients_that_stop_reading_are_cut_after_the_write_deadline_and_cost_bounded_memory() {
    // A 16 MB stream to clients that read nothing: the relay blocks on the full socket, is cut
    // after client_io_timeout without progress, and its thread goes back to work.
    let (mock, proxy) = proxy_with("  workers: 8\n  client_io_timeout: 2\n");
    let _ = mock;
    assert_eq!(
        roundtrip(proxy.port, &proxy.ca_path(), &quick_chat()).status,
        200
    );
    let before = rss_kib(proxy.pid());
    let flood = chat_request(r#"{"model":"flood","stream":true,"messages":[]}"#, "");
    let stalled: Vec<_> = (0..3)
        .map(|_| {
            let mut tls = connect(proxy.port, &proxy.ca_path());
            tls.write_all(&flood).unwrap();
            tls
        })
        .collect();
    // The kernel takes up to its send buffer (tcp_wmem, 4 MB on loopback) before a write
    // blocks; the deadline runs from then. A debug build relays ~1 MB/s per stream.
    let started = Instant::now();
    let mut peak = 0;
    let cut = loop {
        peak = peak.max(rss_kib(proxy.pid()));
        let aborted = proxy
            .log()
            .lines()
            .filter(|l| l.contains("model=flood") && l.contains("aborted=client"))
            .count();
        if aborted == stalled.len() || started.elapsed() > Duration::from_secs(40) {
            break aborted;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(cut, stalled.len(), "{}", proxy.log());
    // The workers are free again.
    let r = roundtrip(proxy.port, &proxy.ca_path(), &quick_chat());
    assert_eq!(r.status, 200);
    if !crate::harness::emulated() {
        let growth = peak.saturating_sub(before);
        assert!(growth < 3 * 2048, "{growth} KiB for three stalled readers");
    }
    drop(stalled);
}
