//! Bad input: every malformed request gets OpenAI's error shape and the right status, and the
//! server keeps serving.

use std::io::{Read, Write};

use serde_json::Value;

use crate::support::*;

#[derive(Clone, Copy)]
enum Key {
    App,
    Reviewer,
    None,
    Bogus,
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    key: Key,
    body: &'static [u8],
    status: u16,
    code: &'static str,
}

const fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    key: Key,
    body: &'static [u8],
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        key,
        body,
        status,
        code,
    }
}

const CHAT: &str = "/v1/chat/completions";

const CASES: &[Case] = &[
    case("malformed json", "POST", CHAT, Key::App, b"{\"model\": \"m\", ", 400, "invalid_request"),
    case("empty body", "POST", CHAT, Key::App, b"", 400, "invalid_request"),
    case("invalid utf-8", "POST", CHAT, Key::App, b"{\"model\": \"\xff\xfe\", \"messages\": []}", 400, "invalid_request"),
    case("not an object", "POST", CHAT, Key::App, b"[1,2,3]", 400, "invalid_request"),
    case("missing messages", "POST", CHAT, Key::App, b"{\"model\": \"m\"}", 400, "invalid_request"),
    case("missing role", "POST", CHAT, Key::App, b"{\"model\": \"m\", \"messages\": [{\"content\": \"hi\"}]}", 400, "invalid_request"),
    case("wrong type model", "POST", CHAT, Key::App, b"{\"model\": 42, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 400, "invalid_request"),
    case("wrong type stream", "POST", CHAT, Key::App, b"{\"model\": \"m\", \"stream\": \"yes\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 400, "invalid_request"),
    case("wrong type max_tokens", "POST", CHAT, Key::App, b"{\"model\": \"m\", \"max_tokens\": \"9\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 400, "invalid_request"),
    case("unknown model", "POST", CHAT, Key::App, b"{\"model\": \"no-such-model\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 404, "model_not_found"),
    case("no key", "POST", CHAT, Key::None, b"{}", 401, "invalid_api_key"),
    case("unknown key", "POST", CHAT, Key::Bogus, b"{}", 401, "invalid_api_key"),
    case("reviewer on /v1", "POST", CHAT, Key::Reviewer, b"{}", 403, "insufficient_permissions"),
    case("app on /api", "GET", "/api/interactions", Key::App, b"", 403, "insufficient_permissions"),
    case("no key on /api", "GET", "/api/interactions", Key::None, b"", 401, "invalid_api_key"),
    case("unsupported openai path", "POST", "/v1/embeddings", Key::App, b"{}", 404, "not_found"),
    case("responses api", "POST", "/v1/responses", Key::App, b"{}", 404, "not_found"),
    case("wrong method", "GET", CHAT, Key::App, b"", 405, "method_not_allowed"),
    case("unknown interaction", "GET", "/api/interactions/ix_nope", Key::Reviewer, b"", 404, "not_found"),
    case("weird interaction id", "GET", "/api/interactions/%00%ff..", Key::Reviewer, b"", 404, "not_found"),
    case("bad limit", "GET", "/api/interactions?limit=abc", Key::Reviewer, b"", 400, "invalid_request"),
    case("limit too big", "GET", "/api/interactions?limit=100000", Key::Reviewer, b"", 400, "invalid_request"),
    case("bad cursor", "GET", "/api/interactions?cursor=-1", Key::Reviewer, b"", 400, "invalid_request"),
    case("bad since", "GET", "/api/interactions?since=yesterday", Key::Reviewer, b"", 400, "invalid_request"),
];

#[tokio::test]
async fn bad_input_table() {
    let p = Pair::start_with(Script::new(), |o| o.models = vec!["m".into()]).await;
    for c in CASES {
        let mut req = client().request(c.method.parse().unwrap(), p.url(c.path));
        match c.key {
            Key::App => req = req.bearer_auth(&p.app),
            Key::Reviewer => req = req.bearer_auth(&p.reviewer),
            Key::Bogus => req = req.bearer_auth("keel_0000"),
            Key::None => {}
        }
        if c.method == "POST" {
            req = req
                .header("content-type", "application/json")
                .body(c.body.to_vec());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text}", c.name));
        let err = assert_error_shape(&body);
        assert_eq!(err["code"], c.code, "{}: {body}", c.name);
    }
    assert_eq!(
        p.mock.request_count(),
        0,
        "no bad request reaches the upstream"
    );
    let health = client().get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server survives every bad input");
}

/// Sends raw bytes over TCP and returns the response head and body.
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_oversized_body_is_refused_by_its_content_length() {
    let p = Pair::start(Script::new()).await;
    let addr = p.gw.addr;
    let app = p.app.clone();
    let resp = tokio::task::spawn_blocking(move || {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {app}\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n{{\"model\":"
        );
        raw(addr, head.as_bytes())
    })
    .await
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert!(resp.contains("request_too_large"), "{resp}");
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_while_reading() {
    let p = Pair::start_with(Script::new(), |o| {
        o.extra_toml = "[server]\nmax_body_bytes = 1024\n".into()
    })
    .await;
    let big = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(4096)
    );
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = client()
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(&p.app)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(assert_error_shape(&body)["code"], "request_too_large");
}

#[tokio::test]
async fn garbage_http_does_not_stop_the_server() {
    let p = Pair::start(Script::new()).await;
    let addr = p.gw.addr;
    let r = tokio::task::spawn_blocking(move || raw(addr, b"\x00\x01garbage\r\n\r\n"))
        .await
        .unwrap();
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
    let health = client().get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
