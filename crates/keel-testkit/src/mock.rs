//! A scripted mock of an OpenAI-compatible upstream (Chat Completions JSON and SSE, faults included).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use keel_testkit::mock::{MockUpstream, Reply, Script};
//! let mock = MockUpstream::start(Script::new().then(Reply::error(500, "boom"))).await?;
//! // point the client under test at mock.base_url() ("http://127.0.0.1:PORT/v1"):
//! // the first chat request gets a 500, every later one an echo.
//! assert_eq!(mock.request_count(), 0);
//! # Ok(()) }
//! ```
//!
//! Each `POST /v1/chat/completions` with a JSON object body is recorded and consumes the next
//! scripted [`Reply`] (FIFO); when the queue is empty the script's default reply (an echo unless
//! changed) answers. `GET /v1/models` lists the script's model names. The server is plain hyper
//! HTTP/1.1 with its own accept loop, so faults such as [`Reply::Reset`] close the real TCP
//! connection.

mod body;
mod openai;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use body::MockBody;
use openai::{ChoicePlan, Ending, Params};

/// One scripted answer to a chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Content `"echo: " + <text of the last user message>` (string content, or the `text` parts
    /// of a content-part array joined by spaces). Honours `n` (with `n > 1` choice `i` says
    /// `"echo[i]: …"`), `stream` and `stream_options.include_usage`.
    Echo,
    /// Fixed content; `stream`, `include_usage` and `n` handled as for [`Reply::Echo`] (with
    /// `n > 1` choice `i` says `"<text> [i]"`). Streams split the text at word starts.
    Text(String),
    /// Content streamed as exactly these pieces (one chunk each) with `delay` between them, as
    /// one choice (`n` is ignored). Honours `include_usage`; a request without `stream: true`
    /// gets the joined pieces as a JSON completion after the same total delay.
    Stream {
        /// The content deltas, in order.
        chunks: Vec<String>,
        /// The pause between consecutive content chunks.
        delay: Duration,
    },
    /// An assistant message calling one function (`finish_reason: "tool_calls"`); streams send
    /// the arguments as deltas. A [`Value::String`] is used verbatim as the `arguments` text,
    /// any other value is serialised to JSON text.
    ToolCall {
        /// The function name.
        name: String,
        /// The function arguments.
        arguments: Value,
    },
    /// This HTTP status with this JSON body (see [`Reply::error`] for OpenAI error objects).
    /// A status outside 100..=999 becomes 500.
    Status(u16, Value),
    /// Wait, then answer with the inner reply (nothing is sent while waiting).
    Delay(Duration, Box<Reply>),
    /// Never answer (until the client gives up or the mock shuts down).
    Hang,
    /// Read the request, then close the TCP connection without sending a byte.
    Reset,
    /// Status 200 SSE whatever the request's `stream` says: a role chunk and one content chunk
    /// (`"Hello"`), then a truncated JSON event
    /// (`data: {"id":…,"choices": [`) and the end of the body, without `[DONE]`.
    MalformedSse,
    /// Status 200 SSE whatever the request's `stream` says: a role chunk and these content
    /// chunks, then the connection drops
    /// (no finish chunk, no `[DONE]`, no end of the chunked body).
    StreamCutoff {
        /// The content deltas sent before the connection drops.
        chunks: Vec<String>,
    },
    /// Status 200 SSE with this text sent verbatim as the body, whatever the request asked
    /// for (see [`fixture`]).
    RawSse(String),
}

impl Reply {
    /// [`Reply::Text`].
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// [`Reply::Stream`] from string pieces.
    pub fn stream<S: Into<String>>(chunks: impl IntoIterator<Item = S>, delay: Duration) -> Self {
        Self::Stream {
            chunks: chunks.into_iter().map(Into::into).collect(),
            delay,
        }
    }

    /// [`Reply::StreamCutoff`] from string pieces.
    pub fn stream_cutoff<S: Into<String>>(chunks: impl IntoIterator<Item = S>) -> Self {
        Self::StreamCutoff {
            chunks: chunks.into_iter().map(Into::into).collect(),
        }
    }

    /// [`Reply::ToolCall`].
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::ToolCall {
            name: name.into(),
            arguments,
        }
    }

    /// [`Reply::Delay`].
    pub fn delay(delay: Duration, then: Reply) -> Self {
        Self::Delay(delay, Box::new(then))
    }

    /// [`Reply::Status`] with an OpenAI error object
    /// `{"error":{"message","type","param":null,"code":null}}`; `type` is `server_error` for
    /// 5xx and `invalid_request_error` otherwise.
    pub fn error(status: u16, message: &str) -> Self {
        let kind = if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        Self::Status(status, openai::error_value(message, kind, None, None))
    }
}

/// What the mock answers, in order, plus its configuration.
#[derive(Debug, Clone)]
pub struct Script {
    replies: VecDeque<Reply>,
    default: Reply,
    models: Vec<String>,
    record: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            replies: VecDeque::new(),
            default: Reply::Echo,
            models: vec!["mock-model".to_owned()],
            record: true,
        }
    }
}

impl From<Vec<Reply>> for Script {
    fn from(replies: Vec<Reply>) -> Self {
        Self::new().replies(replies)
    }
}

impl Script {
    /// Echo to every request, models `["mock-model"]`, requests recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one reply to the queue.
    pub fn then(mut self, reply: Reply) -> Self {
        self.replies.push_back(reply);
        self
    }

    /// Appends these replies to the queue.
    pub fn replies(mut self, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.replies.extend(replies);
        self
    }

    /// The reply used once the queue is empty (default [`Reply::Echo`]).
    pub fn default_reply(mut self, reply: Reply) -> Self {
        self.default = reply;
        self
    }

    /// The model names `GET /v1/models` lists (default `["mock-model"]`). The first one also
    /// fills `model` in replies to requests without a `model`.
    pub fn models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Stops recording request bodies (for long benchmarks; [`MockHandle::request_count`]
    /// still counts).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }
}

/// What the mock saw of one counted chat request besides its body (recorded even
/// [`Script::without_recording`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When the request's body had been read.
    pub at: Instant,
    /// The `Authorization` header, if any (e.g. `Bearer sk-…` from `api_key_env`).
    pub authorization: Option<String>,
}

/// Starts mock upstreams.
pub struct MockUpstream;

impl MockUpstream {
    /// Serves `script` on `127.0.0.1:0` from the current tokio runtime.
    pub async fn start(script: Script) -> io::Result<MockHandle> {
        Self::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), script).await
    }

    /// Serves `script` on `addr` from the current tokio runtime.
    pub async fn start_on(addr: impl ToSocketAddrs, script: Script) -> io::Result<MockHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                replies: script.replies,
                default: script.default,
            }),
            requests: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            record: script.record,
            models: script.models,
            created: openai::unix_now(),
        });
        let (stop, stopped) = watch::channel(());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(MockHandle {
            addr,
            shared,
            stop,
            task,
        })
    }
}

/// A running mock upstream; dropping it shuts the server down and closes its connections.
pub struct MockHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockHandle {
    /// `http://IP:PORT/v1` (a wildcard bind address is reported as 127.0.0.1).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}/v1")
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The JSON bodies of the chat requests received so far, in arrival order (empty when the
    /// script was built [`Script::without_recording`]). Bodies that were not valid JSON
    /// objects are answered with a 400 and not recorded.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// The most recent recorded chat request body.
    pub fn last_request(&self) -> Option<Value> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Arrival time and `Authorization` header of each counted chat request, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// How many chat requests with a JSON object body arrived (recorded or not).
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Queues one more scripted reply (after those still queued).
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.state).replies.push_back(reply);
    }

    /// Replaces the reply used once the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        lock(&self.shared.state).default = reply;
    }

    /// How many scripted replies are still queued.
    pub fn pending_replies(&self) -> usize {
        lock(&self.shared.state).replies.len()
    }

    /// Stops accepting, closes every open connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let Self { stop, task, .. } = self;
        drop(stop);
        let _ = task.await;
    }
}

struct State {
    replies: VecDeque<Reply>,
    default: Reply,
}

struct Shared {
    state: Mutex<State>,
    requests: Mutex<Vec<Value>>,
    received: Mutex<Vec<Received>>,
    count: AtomicUsize,
    record: bool,
    models: Vec<String>,
    created: u64,
}

impl Shared {
    fn next_reply(&self) -> Reply {
        let mut state = lock(&self.state);
        match state.replies.pop_front() {
            Some(reply) => reply,
            None => state.default.clone(),
        }
    }

    fn default_model(&self) -> &str {
        self.models.first().map_or("mock-model", String::as_str)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<()>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream, Arc::clone(&shared), stopped.clone()),
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!(%error, "mock upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            _ = stopped.changed() => break,
        }
    }
}

fn serve(stream: TcpStream, shared: Arc<Shared>, mut stopped: watch::Receiver<()>) {
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        // Notified by a `Reply::Reset`: dropping the connection closes the socket unanswered.
        let reset = Arc::new(Notify::new());
        let service_reset = Arc::clone(&reset);
        let service = service_fn(move |request| {
            handle(Arc::clone(&shared), Arc::clone(&service_reset), request)
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            _ = reset.notified() => {}
            _ = stopped.changed() => {}
        }
    });
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let response = match (&method, path.as_str()) {
        (&Method::POST, "/v1/chat/completions") => chat(&shared, &reset, request).await,
        (&Method::GET, "/v1/models") => json(
            StatusCode::OK,
            openai::models_json(&shared.models, shared.created),
        ),
        (&Method::GET, _) if path.starts_with("/v1/models/") => {
            let id = &path["/v1/models/".len()..];
            if shared.models.iter().any(|m| m == id) {
                json(StatusCode::OK, openai::model_json(id, shared.created))
            } else {
                let message = format!("The model '{id}' does not exist");
                error(
                    StatusCode::NOT_FOUND,
                    &message,
                    "invalid_request_error",
                    Some("model"),
                    Some("model_not_found"),
                )
            }
        }
        _ => {
            let message = format!("Invalid URL ({method} {})", request.uri().path());
            error(
                StatusCode::NOT_FOUND,
                &message,
                "invalid_request_error",
                None,
                None,
            )
        }
    };
    Ok(response)
}

async fn chat(shared: &Shared, reset: &Notify, request: Request<Incoming>) -> Response<MockBody> {
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Could not read the request body.",
                "invalid_request_error",
                None,
                None,
            )
        }
    };
    let body: Value =
        match serde_json::from_slice(&bytes) {
            Ok(body @ Value::Object(_)) => body,
            _ => return error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request. The OpenAI API expects a JSON \
                 object payload, but what was sent was not valid JSON.",
                "invalid_request_error",
                None,
                None,
            ),
        };
    lock(&shared.received).push(Received {
        at: Instant::now(),
        authorization,
    });
    shared.count.fetch_add(1, Ordering::Relaxed);
    let params = match body.get("messages") {
        Some(Value::Array(messages)) => Some(Params::from_request(
            &body,
            messages,
            shared.default_model(),
        )),
        _ => None,
    };
    if shared.record {
        lock(&shared.requests).push(body);
    }
    let Some(params) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            Some("messages"),
            Some("missing_required_parameter"),
        );
    };

    let mut reply = shared.next_reply();
    loop {
        match reply {
            Reply::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::Hang => match std::future::pending::<Infallible>().await {},
            Reply::Reset => {
                reset.notify_one();
                match std::future::pending::<Infallible>().await {}
            }
            other => return respond(other, &params).await,
        }
    }
}

async fn respond(reply: Reply, params: &Params) -> Response<MockBody> {
    let (plans, delay) = match reply {
        Reply::Echo => {
            let texts = (0..params.n)
                .map(|i| {
                    if params.n > 1 {
                        format!("echo[{i}]: {}", params.last_user_text)
                    } else {
                        format!("echo: {}", params.last_user_text)
                    }
                })
                .collect();
            (word_plans(texts), Duration::ZERO)
        }
        Reply::Text(text) => {
            let texts = if params.n > 1 {
                (0..params.n).map(|i| format!("{text} [{i}]")).collect()
            } else {
                vec![text]
            };
            (word_plans(texts), Duration::ZERO)
        }
        Reply::Stream { chunks, delay } => {
            if !params.stream {
                let pauses = u32::try_from(chunks.len().saturating_sub(1)).unwrap_or(u32::MAX);
                tokio::time::sleep(delay.saturating_mul(pauses)).await;
            }
            (vec![ChoicePlan::content(chunks)], delay)
        }
        Reply::ToolCall { name, arguments } => {
            let arguments = match arguments {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let plans = (0..params.n)
                .map(|_| ChoicePlan::tool(&name, &arguments))
                .collect();
            (plans, Duration::ZERO)
        }
        Reply::Status(status, body) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json(status, serde_json::to_vec(&body).unwrap_or_default());
        }
        Reply::MalformedSse => {
            let plans = [ChoicePlan::content(vec!["Hello".to_owned()])];
            return sse(openai::sse_pieces(
                params,
                &plans,
                Duration::ZERO,
                Ending::Malformed,
            ));
        }
        Reply::StreamCutoff { chunks } => {
            let plans = [ChoicePlan::content(chunks)];
            return sse(openai::sse_pieces(
                params,
                &plans,
                Duration::ZERO,
                Ending::Cutoff,
            ));
        }
        Reply::RawSse(text) => {
            let mut pieces = VecDeque::with_capacity(1);
            pieces.push_back(body::Piece::Data(Bytes::from(text)));
            return sse(pieces);
        }
        // Handled by the caller; answered as an echo should one ever get here.
        Reply::Delay(..) | Reply::Hang | Reply::Reset => {
            let text = format!("echo: {}", params.last_user_text);
            (word_plans(vec![text]), Duration::ZERO)
        }
    };
    if params.stream {
        sse(openai::sse_pieces(params, &plans, delay, Ending::Done))
    } else {
        json(StatusCode::OK, openai::completion_json(params, &plans))
    }
}

fn word_plans(texts: Vec<String>) -> Vec<ChoicePlan> {
    texts
        .into_iter()
        .map(|text| ChoicePlan::content(openai::split_words(&text)))
        .collect()
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn sse(pieces: VecDeque<body::Piece>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::pieces(pieces));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<MockBody> {
    let body = openai::error_value(message, kind, param, code);
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

const FIXTURES: &[(&str, &str)] = &[
    (
        "chat_stream_usage.sse",
        include_str!("../fixtures/chat_stream_usage.sse"),
    ),
    (
        "chat_stream_tool_call.sse",
        include_str!("../fixtures/chat_stream_tool_call.sse"),
    ),
    (
        "chat_stream_comments.sse",
        include_str!("../fixtures/chat_stream_comments.sse"),
    ),
];

/// The text of an SSE fixture from `crates/keel-testkit/fixtures/` (the `.sse` suffix may be
/// left off), for [`Reply::RawSse`]. The bundled fixtures are compiled in; others are read
/// from the directory. Unknown names give an SSE comment saying so, with no events.
///
/// Bundled: `chat_stream_usage.sse` (a text stream with a usage chunk),
/// `chat_stream_tool_call.sse` (a streamed function call), `chat_stream_comments.sse`
/// (a non-OpenAI server's style: keep-alive comments, CRLF line ends, no usage).
pub fn fixture(name: &str) -> String {
    try_fixture(name).unwrap_or_else(|error| format!(": missing fixture {name}: {error}\n\n"))
}

/// Like [`fixture`], but reports a missing fixture as an error.
pub fn try_fixture(name: &str) -> io::Result<String> {
    let file = if name.ends_with(".sse") {
        name.to_owned()
    } else {
        format!("{name}.sse")
    };
    if let Some((_, text)) = FIXTURES.iter().find(|(known, _)| *known == file) {
        return Ok((*text).to_owned());
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(&file);
    std::fs::read_to_string(path)
}
