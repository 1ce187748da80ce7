//! The JSON endpoints that name a model, and how each one's streams look.

/// A JSON endpoint that names a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Moderations,
    AudioSpeech,
}

impl Endpoint {
    /// The endpoint for a request path under `/v1`.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            "/v1/moderations" => Endpoint::Moderations,
            "/v1/audio/speech" => Endpoint::AudioSpeech,
            _ => return None,
        })
    }

    /// The path after `/v1`, appended to a backend's endpoint.
    pub fn api_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Moderations => "/moderations",
            Endpoint::AudioSpeech => "/audio/speech",
        }
    }

    /// Only chat completions have a stream <-> JSON conversion (`stream_mode`).
    pub fn converts_streams(self) -> bool {
        self == Endpoint::ChatCompletions
    }

    /// The Responses API names every event (`response.created`, ...); the others name none,
    /// and a named one there is a vendor extension clients choke on.
    pub fn keeps_named_events(self) -> bool {
        self == Endpoint::Responses
    }

    /// Chat and text completion streams end with `data: [DONE]`; Responses streams end with a
    /// `response.completed` event and no `[DONE]`.
    pub fn ends_with_done(self) -> bool {
        self != Endpoint::Responses
    }
}
