//! What the proxy does with a request: dispatch by path, the model-bearing endpoints (route,
//! rewrite, forward with failover, relay in the mode the client asked for), the model list,
//! CONNECT, access keys, reasoning replay, and the JSON and SSE handling they share. It sits on
//! the server layer (requests in, responses out) and the upstream layer (backends).

pub mod access_keys;
pub mod connect;
pub mod dispatch;
pub mod forward;
pub mod json_fields;
pub mod reasoning;
pub mod sse;

pub use dispatch::{Proxy, Shared};
