//! Integration tests: the real binary, over real TLS sockets, against a mock backend.
//! One test binary (ripgrep's layout): modules share the harness and compile once.

// Test code fails by panicking; that is what unwrap is for here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with tests/hostile/, which uses parts of them this suite does not, and the reverse.
#[allow(dead_code)]
mod client;
#[allow(dead_code)]
mod harness;
#[allow(dead_code)]
mod mock;

mod api;
mod certs;
mod chat;
mod cli;
mod compat;
mod http;
mod ide;
mod idle;
mod lifecycle;
mod operations;
mod routing;
mod secrets;
mod startup;
mod status;
mod tunnel;
mod usage;

use harness::{Proxy, config_yaml};
use mock::Mock;

/// A closed loopback port: connecting to it is refused.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The entries most tests use; each maps a client model to one mock behaviour.
pub fn standard_apis() -> String {
    format!(
        r#"  - {{name: chat-backend, endpoint: "{{UPSTREAM}}", custom_model_id: gpt-4o, target_model_id: chat}}
  - {{name: slow-backend, endpoint: "{{UPSTREAM}}/v1/", custom_model_id: slow, target_model_id: chat-slow}}
  - {{name: nodone-backend, endpoint: "{{UPSTREAM}}", custom_model_id: nodone, target_model_id: chat-nodone}}
  - {{name: forced-stream, endpoint: "{{UPSTREAM}}", custom_model_id: forced-stream, target_model_id: chat, stream_mode: true}}
  - {{name: forced-json, endpoint: "{{UPSTREAM}}", custom_model_id: forced-json, target_model_id: chat, stream_mode: "false"}}
  - {{name: err500, endpoint: "{{UPSTREAM}}", custom_model_id: err500, target_model_id: status-500}}
  - {{name: err400, endpoint: "{{UPSTREAM}}", custom_model_id: err400, target_model_id: status-400}}
  - {{name: err429, endpoint: "{{UPSTREAM}}", custom_model_id: err429, target_model_id: status-429}}
  - {{name: dropper, endpoint: "{{UPSTREAM}}", custom_model_id: drop, target_model_id: drop}}
  - {{name: hanger, endpoint: "{{UPSTREAM}}", custom_model_id: hang, target_model_id: hang}}
  - {{name: refused-backend, endpoint: "http://127.0.0.1:{}", custom_model_id: refused, target_model_id: chat}}
  - {{name: inactive, endpoint: "{{UPSTREAM}}", custom_model_id: switched-off, target_model_id: chat, active: false}}"#,
        closed_port()
    )
}

/// A mock backend and a proxy in front of it with [`standard_apis`].
pub fn setup() -> (Mock, Proxy) {
    setup_with("  first_byte_timeout: 1\n")
}

pub fn setup_with(server_extra: &str) -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(&mock.url(), &standard_apis(), server_extra));
    (mock, proxy)
}
