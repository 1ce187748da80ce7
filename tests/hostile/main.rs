//! Hostile and faulty peers: what a hostile LAN host, a flaky backend or simply a busy team does
//! to the proxy, each scenario bounded in count and time, on loopback only. Each asserts that the
//! peer costs its own share and nothing more: other clients are served on time.
//!
//! The harness, client and mock backend are the integration suite's (`tests/it/`). The same
//! scenarios at full size, side by side with nginx, are in the benchmark (`bench --hostile`).

// Test code fails by panicking; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The integration suite's, of which this one uses a part.
#[allow(dead_code)]
#[path = "../it/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../it/mock.rs"]
mod mock;

mod backends;
mod bodies;
mod connect;
mod connections;
mod readers;

use harness::{Proxy, config_yaml};
use mock::Mock;

/// A proxy in front of a mock backend: `gpt-4o` answers at once, `hang` never, `slow` streams
/// for 1.6 s, `stall` sends two stream events and then nothing for 30 s.
pub fn proxy_with(server_extra: &str) -> (Mock, Proxy) {
    let mock = Mock::start();
    let apis = "  - {name: chat-backend, endpoint: \"{UPSTREAM}\", custom_model_id: gpt-4o, target_model_id: chat}\n  \
                - {name: hanger, endpoint: \"{UPSTREAM}\", custom_model_id: hang, target_model_id: hang}\n  \
                - {name: slow-backend, endpoint: \"{UPSTREAM}\", custom_model_id: slow, target_model_id: chat-slow}\n  \
                - {name: stalling, endpoint: \"{UPSTREAM}\", custom_model_id: stall, target_model_id: stall}\n  \
                - {name: flooding, endpoint: \"{UPSTREAM}\", custom_model_id: flood, target_model_id: flood}";
    let proxy = Proxy::start(&config_yaml(&mock.url(), apis, server_extra));
    (mock, proxy)
}

/// A chat completion that the `gpt-4o` entry answers at once.
pub fn quick_chat() -> Vec<u8> {
    client::chat_request(r#"{"model":"gpt-4o","messages":[]}"#, "")
}

/// Five ordinary clients, one after another, each answered 200 within 2 s while `while_what`.
pub fn ordinary_clients_are_served(proxy: &Proxy, while_what: &str) {
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let r = client::roundtrip(proxy.port, &proxy.ca_path(), &quick_chat());
        assert_eq!(r.status, 200, "{while_what}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "served in {:?} {while_what}",
            started.elapsed()
        );
    }
}
