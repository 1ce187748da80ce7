//! Server-sent events: parsing a backend's stream incrementally, rewriting and filtering events
//! for the client, and converting between a stream and a single JSON reply. Everything here is
//! a pure function of bytes and JSON; the I/O lives in `chat.rs`.

pub mod convert;
pub mod parser;
pub mod rewrite;

pub use parser::{Item, Parser};

/// The payload that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";
