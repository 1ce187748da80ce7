//! `GET /v1/models` and `GET /v1/models/{id}`: the configured models, as OpenAI lists them.

use std::io;

use serde_json::{Value, json};

use crate::api::context::Ctx;
use crate::api::reply;
use crate::api::state::Proxy;
use crate::api_error::ApiError;
use crate::server::{After, Responder};

pub fn list(proxy: &Proxy, responder: Responder<'_>, ctx: &mut Ctx) -> io::Result<After> {
    let data: Vec<Value> = proxy
        .router
        .models()
        .map(|b| object(proxy, &b.custom_model_id, &b.name))
        .collect();
    reply::json(responder, ctx, &json!({"object": "list", "data": data}))
}

/// `id` as it stands in the path, percent-encoded (`qwen%2Fqwen3`).
pub fn one(proxy: &Proxy, id: &str, responder: Responder<'_>, ctx: &mut Ctx) -> io::Result<After> {
    let id = percent_decode(id);
    match proxy.router.lookup(&id) {
        Some(b) => reply::json(responder, ctx, &object(proxy, &b.custom_model_id, &b.name)),
        None => {
            let e = ApiError::model_not_found(&id, &proxy.router.model_list());
            reply::error(responder, ctx, &e)
        }
    }
}

fn object(proxy: &Proxy, id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": proxy.created, "owned_by": owner})
}

/// `%XX` sequences decoded (model ids such as `qwen/qwen3` arrive as `qwen%2Fqwen3`); anything
/// malformed stays as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("qwen%2Fqwen3"), "qwen/qwen3");
        assert_eq!(percent_decode("a%zzb%"), "a%zzb%");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
