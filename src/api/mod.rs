//! What the proxy does with a request. Read it in the order a request runs:
//!
//! - [`dispatch`]: by method and path; the request's record ([`context`]) becomes its log line
//!   and metrics when it is over;
//! - [`forward`]: the model-bearing endpoints: the body read ([`request`]), routed, sent with
//!   failover; [`relay`] answers the client in the mode the response and the client call for;
//! - [`models`], [`connect`]: the model list, and `CONNECT`;
//! - [`reply`]: whole replies and errors, written through the responder.
//!
//! Beside them: [`state`] (what a configuration builds, what outlives reloads), [`endpoint`],
//! [`access_keys`], [`reasoning`] replay, usage asked for on clients' behalf
//! ([`stream_usage`]), and SSE ([`sse`]) handling (JSON bodies are read with
//! [`crate::json::Fields`]). The layer sits on the server (requests in, responses out) and on
//! upstream (backends).

pub mod access_keys;
pub mod connect;
pub mod context;
pub mod dispatch;
pub mod endpoint;
pub mod forward;
pub mod limits;
pub mod models;
pub mod reasoning;
pub mod relay;
pub mod reply;
pub mod request;
pub mod sse;
pub mod state;
pub mod stream_usage;

pub use state::{Proxy, Shared};
