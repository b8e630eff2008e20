//! OpenAI Chat Completions wire shapes the mock sends: completions, SSE chunks, usage, errors, models.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::body::Piece;

pub(crate) const SYSTEM_FINGERPRINT: &str = "fp_mock";
const SERVICE_TIER: &str = "default";

/// What the mock read from a chat request.
pub(crate) struct Params {
    pub(crate) model: String,
    pub(crate) n: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) last_user_text: String,
}

impl Params {
    /// Reads the fields the mock honours; `default_model` fills a missing `model`.
    pub(crate) fn from_request(body: &Value, messages: &[Value], default_model: &str) -> Self {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(default_model)
            .to_owned();
        let n = body
            .get("n")
            .and_then(Value::as_u64)
            .map_or(1, |n| n.clamp(1, 128) as usize);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = stream
            && body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let prompt_tokens = messages.iter().map(|m| count_words(&message_text(m))).sum();
        let last_user_text = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(message_text)
            .unwrap_or_default();
        Self {
            model,
            n,
            stream,
            include_usage,
            prompt_tokens,
            last_user_text,
        }
    }
}

/// The text of a message: a string `content`, or its `{type:"text",text}` parts joined by spaces.
pub(crate) fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            texts.join(" ")
        }
        _ => String::new(),
    }
}

/// The mock's token count: whitespace-separated words.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits text into stream pieces at word starts, keeping the whitespace: `"a b"` → `["a", " b"]`.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        // A new piece starts with the whitespace that follows a word.
        if space && !prev_space && i > start {
            pieces.push(text[start..i].to_owned());
            start = i;
        }
        prev_space = space;
    }
    if start < text.len() {
        pieces.push(text[start..].to_owned());
    }
    pieces
}

/// Splits text into pieces of at most `max` characters.
pub(crate) fn split_chars(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// What one choice says.
pub(crate) enum Kind {
    Content,
    Tool { id: String, name: String },
}

/// One choice of a reply, with the pieces it streams in (content, or tool-call arguments).
pub(crate) struct ChoicePlan {
    pub(crate) kind: Kind,
    pub(crate) pieces: Vec<String>,
}

impl ChoicePlan {
    pub(crate) fn content(pieces: Vec<String>) -> Self {
        Self {
            kind: Kind::Content,
            pieces,
        }
    }

    pub(crate) fn tool(name: &str, arguments: &str) -> Self {
        Self {
            kind: Kind::Tool {
                id: random_id("call_", 24),
                name: name.to_owned(),
            },
            pieces: split_chars(arguments, 8),
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self.kind {
            Kind::Content => "stop",
            Kind::Tool { .. } => "tool_calls",
        }
    }
}

#[derive(Serialize, Clone, Copy)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

fn usage(params: &Params, plans: &[ChoicePlan]) -> Usage {
    let completion_tokens = plans.iter().map(|p| count_words(&p.pieces.concat())).sum();
    Usage {
        prompt_tokens: params.prompt_tokens,
        completion_tokens,
        total_tokens: params.prompt_tokens + completion_tokens,
        prompt_tokens_details: PromptDetails {
            cached_tokens: 0,
            audio_tokens: 0,
        },
        completion_tokens_details: CompletionDetails {
            reasoning_tokens: 0,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    }
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    refusal: Option<()>,
    annotations: &'static [()],
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

/// A `chat.completion` JSON body.
pub(crate) fn completion_json(params: &Params, plans: &[ChoicePlan]) -> Vec<u8> {
    let id = random_id("chatcmpl-", 29);
    let choices = plans
        .iter()
        .enumerate()
        .map(|(index, plan)| {
            let text = plan.pieces.concat();
            let message = match &plan.kind {
                Kind::Content => Message {
                    role: "assistant",
                    content: Some(text),
                    tool_calls: None,
                    refusal: None,
                    annotations: &[],
                },
                Kind::Tool { id, name } => Message {
                    role: "assistant",
                    content: None,
                    tool_calls: Some(vec![ToolCall {
                        id,
                        kind: "function",
                        function: Function {
                            name,
                            arguments: text,
                        },
                    }]),
                    refusal: None,
                    annotations: &[],
                },
            };
            Choice {
                index,
                message,
                logprobs: None,
                finish_reason: plan.finish_reason(),
            }
        })
        .collect();
    let completion = Completion {
        id: &id,
        object: "chat.completion",
        created: unix_now(),
        model: &params.model,
        choices,
        usage: usage(params, plans),
        service_tier: SERVICE_TIER,
        system_fingerprint: SYSTEM_FINGERPRINT,
    };
    serde_json::to_vec(&completion).unwrap_or_default()
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent without `include_usage`; `null` on ordinary chunks with it; set on the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// How an SSE reply ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Finish chunks, the usage chunk if asked for, then `data: [DONE]`.
    Done,
    /// A truncated JSON event, then the end of the body without `[DONE]`.
    Malformed,
    /// The connection drops without finishing the response.
    Cutoff,
}

/// Collects SSE events into body pieces, coalescing the events between pauses into one frame.
struct SseWriter {
    pieces: VecDeque<Piece>,
    buf: Vec<u8>,
}

impl SseWriter {
    fn new() -> Self {
        Self {
            pieces: VecDeque::new(),
            buf: Vec::with_capacity(1024),
        }
    }

    fn event<T: Serialize>(&mut self, value: &T) {
        self.buf.extend_from_slice(b"data: ");
        if serde_json::to_writer(&mut self.buf, value).is_err() {
            self.buf.extend_from_slice(b"{}");
        }
        self.buf.extend_from_slice(b"\n\n");
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn flush_buf(&mut self) {
        if !self.buf.is_empty() {
            let bytes = std::mem::take(&mut self.buf);
            self.pieces.push_back(Piece::Data(Bytes::from(bytes)));
        }
    }

    fn pause(&mut self, delay: Duration) {
        if !delay.is_zero() {
            self.flush_buf();
            self.pieces.push_back(Piece::Sleep(delay));
        }
    }

    fn push(&mut self, piece: Piece) {
        self.flush_buf();
        self.pieces.push_back(piece);
    }

    fn finish(mut self) -> VecDeque<Piece> {
        self.flush_buf();
        self.pieces
    }
}

/// The body pieces of a `chat.completion.chunk` SSE stream.
pub(crate) fn sse_pieces(
    params: &Params,
    plans: &[ChoicePlan],
    delay: Duration,
    ending: Ending,
) -> VecDeque<Piece> {
    let id = random_id("chatcmpl-", 29);
    let created = unix_now();
    let usage_slot = params.include_usage.then_some(None);
    let chunk = |choice: ChunkChoice<'_>| -> Vec<u8> {
        let chunk = Chunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &params.model,
            service_tier: SERVICE_TIER,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: vec![choice],
            usage: usage_slot,
        };
        serde_json::to_vec(&chunk).unwrap_or_default()
    };
    let mut out = SseWriter::new();
    let emit = |out: &mut SseWriter, json: Vec<u8>| {
        out.raw(b"data: ");
        out.raw(&json);
        out.raw(b"\n\n");
    };

    for (index, plan) in plans.iter().enumerate() {
        let delta = match &plan.kind {
            Kind::Content => Delta {
                role: Some("assistant"),
                content: Some(Some("")),
                tool_calls: None,
                refusal: Some(None),
            },
            Kind::Tool { id, name } => Delta {
                role: Some("assistant"),
                content: Some(None),
                tool_calls: Some([ToolCallDelta {
                    index: 0,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }]),
                refusal: Some(None),
            },
        };
        emit(
            &mut out,
            chunk(ChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason: None,
            }),
        );
    }

    let longest = plans.iter().map(|p| p.pieces.len()).max().unwrap_or(0);
    for step in 0..longest {
        if step > 0 {
            out.pause(delay);
        }
        for (index, plan) in plans.iter().enumerate() {
            let Some(piece) = plan.pieces.get(step) else {
                continue;
            };
            let delta = match plan.kind {
                Kind::Content => Delta {
                    content: Some(Some(piece)),
                    ..Delta::default()
                },
                Kind::Tool { .. } => Delta {
                    tool_calls: Some([ToolCallDelta {
                        index: 0,
                        id: None,
                        kind: None,
                        function: FunctionDelta {
                            name: None,
                            arguments: piece,
                        },
                    }]),
                    ..Delta::default()
                },
            };
            emit(
                &mut out,
                chunk(ChunkChoice {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: None,
                }),
            );
        }
    }

    match ending {
        Ending::Done => {
            for (index, plan) in plans.iter().enumerate() {
                emit(
                    &mut out,
                    chunk(ChunkChoice {
                        index,
                        delta: Delta::default(),
                        logprobs: None,
                        finish_reason: Some(plan.finish_reason()),
                    }),
                );
            }
            if params.include_usage {
                out.event(&Chunk {
                    id: &id,
                    object: "chat.completion.chunk",
                    created,
                    model: &params.model,
                    service_tier: SERVICE_TIER,
                    system_fingerprint: SYSTEM_FINGERPRINT,
                    choices: Vec::new(),
                    usage: Some(Some(usage(params, plans))),
                });
            }
            out.raw(b"data: [DONE]\n\n");
        }
        Ending::Malformed => {
            out.raw(b"data: {\"id\":\"");
            out.raw(id.as_bytes());
            out.raw(b"\",\"object\":\"chat.completion.chunk\",\"choices\": [\n\n");
        }
        Ending::Cutoff => {
            out.push(Piece::Flush);
            out.push(Piece::Fail);
        }
    }
    out.finish()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

/// An OpenAI error object: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_value(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    serde_json::to_value(ErrorEnvelope {
        error: ErrorBody {
            message,
            kind,
            param,
            code,
        },
    })
    .unwrap_or(Value::Null)
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

/// The `GET /v1/models` body.
pub(crate) fn models_json(models: &[String], created: u64) -> Vec<u8> {
    let list = ModelList {
        object: "list",
        data: models.iter().map(|id| model(id, created)).collect(),
    };
    serde_json::to_vec(&list).unwrap_or_default()
}

/// The `GET /v1/models/{id}` body.
pub(crate) fn model_json(id: &str, created: u64) -> Vec<u8> {
    serde_json::to_vec(&model(id, created)).unwrap_or_default()
}

fn model(id: &str, created: u64) -> Model<'_> {
    Model {
        id,
        object: "model",
        created,
        owned_by: "mock",
    }
}

/// Seconds since the Unix epoch, as OpenAI's `created`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() | 1
}

fn next_random() -> u64 {
    RNG.with(|state| {
        // xorshift64*: plenty for ids that only need to be distinct.
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// `prefix` followed by `len` random alphanumeric characters.
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    let mut bits = 0u64;
    let mut left = 0;
    for _ in 0..len {
        if left == 0 {
            bits = next_random();
            left = 10;
        }
        let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
        id.push(char::from(c));
        bits /= ALPHABET.len() as u64;
        left -= 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_keeps_leading_whitespace() {
        assert_eq!(split_words("echo: hi  there"), ["echo:", " hi", "  there"]);
        assert_eq!(split_words("  lead"), ["  lead"]);
        assert!(split_words("").is_empty());
    }

    #[test]
    fn split_chars_respects_char_boundaries() {
        assert_eq!(split_chars("ééééé", 2), ["éé", "éé", "é"]);
    }

    #[test]
    fn ids_are_distinct() {
        let a = random_id("chatcmpl-", 29);
        let b = random_id("chatcmpl-", 29);
        assert_ne!(a, b);
        assert_eq!(a.len(), 38);
    }
}
