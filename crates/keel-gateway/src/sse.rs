//! Server-sent events: an incremental parser for upstream streams and an accumulator that
//! rebuilds the reply (text per choice, tool calls, finish reason, usage) from chunks.

use keel_core::TokenUsage;
use serde_json::Value;

/// Splits a byte stream into SSE `data:` payloads, one per event.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

/// One parsed event.
#[derive(Debug, Clone, PartialEq)]
pub enum SseEvent {
    /// The payload of an event's `data:` lines (joined with `\n`).
    Data(String),
    /// `data: [DONE]`.
    Done,
}

/// Bytes that are not valid UTF-8 inside an event.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl SseParser {
    /// Feeds bytes; returns every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, InvalidUtf8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| InvalidUtf8)?;
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = self.data.join("\n");
                    self.data.clear();
                    out.push(if data.trim() == "[DONE]" {
                        SseEvent::Done
                    } else {
                        SseEvent::Data(data)
                    });
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
            // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we need.
        }
        Ok(out)
    }

    /// Whether unterminated input remains (a stream that ended mid-event).
    pub fn has_partial(&self) -> bool {
        !self.buf.iter().all(|b| b.is_ascii_whitespace()) || !self.data.is_empty()
    }
}

/// Rebuilds a reply from chat completion chunks or a full completion.
#[derive(Debug, Default, Clone)]
pub struct ReplyAccumulator {
    pub texts: Vec<String>,
    /// Tool calls per choice: (index, id, name, arguments).
    pub tool_calls: Vec<(usize, Option<String>, String, String)>,
    pub finish_reason: Option<String>,
    pub usage: Option<TokenUsage>,
}

fn usage_from(v: &Value) -> Option<TokenUsage> {
    if !v.is_object() {
        return None;
    }
    let get = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(TokenUsage {
        prompt_tokens: get("prompt_tokens"),
        completion_tokens: get("completion_tokens"),
        total_tokens: get("total_tokens"),
    })
}

impl ReplyAccumulator {
    fn text_slot(&mut self, idx: usize) -> &mut String {
        let idx = idx.min(1024);
        if self.texts.len() <= idx {
            self.texts.resize(idx + 1, String::new());
        }
        &mut self.texts[idx]
    }

    /// Observes one streamed chunk (`object: chat.completion.chunk`).
    pub fn observe_chunk(&mut self, chunk: &Value) {
        if let Some(u) = chunk.get("usage").and_then(usage_from) {
            self.usage = Some(u);
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let idx = choice["index"].as_u64().unwrap_or(0) as usize;
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                self.text_slot(idx).push_str(t);
            } else {
                self.text_slot(idx);
            }
            for tc in delta["tool_calls"].as_array().into_iter().flatten() {
                let tidx = tc["index"].as_u64().unwrap_or(0) as usize;
                let args = tc["function"]["arguments"].as_str().unwrap_or_default();
                let name = tc["function"]["name"].as_str();
                match self
                    .tool_calls
                    .iter_mut()
                    .filter(|(c, ..)| *c == idx)
                    .nth(tidx)
                {
                    Some(slot) => {
                        slot.3.push_str(args);
                        if let Some(n) = name {
                            slot.2.push_str(n);
                        }
                    }
                    None => self.tool_calls.push((
                        idx,
                        tc["id"].as_str().map(str::to_string),
                        name.unwrap_or_default().to_string(),
                        args.to_string(),
                    )),
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(f.to_string());
            }
        }
    }

    /// Observes a complete (non-streamed) completion.
    pub fn observe_completion(&mut self, body: &Value) {
        self.usage = body.get("usage").and_then(usage_from);
        for choice in body["choices"].as_array().into_iter().flatten() {
            let idx = choice["index"].as_u64().unwrap_or(0) as usize;
            let msg = &choice["message"];
            let text = msg["content"].as_str().unwrap_or_default().to_string();
            *self.text_slot(idx) = text;
            for tc in msg["tool_calls"].as_array().into_iter().flatten() {
                self.tool_calls.push((
                    idx,
                    tc["id"].as_str().map(str::to_string),
                    tc["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    tc["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(f.to_string());
            }
        }
    }

    /// Tool calls in OpenAI's shape, or `None` when there were none.
    pub fn tool_calls_json(&self) -> Option<Value> {
        if self.tool_calls.is_empty() {
            return None;
        }
        Some(Value::Array(
            self.tool_calls
                .iter()
                .map(|(choice, id, name, args)| {
                    serde_json::json!({"choice": choice, "id": id, "type": "function",
                        "function": {"name": name, "arguments": args}})
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], expected: Vec<SseEvent>) {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for piece in input {
            got.extend(p.push(piece.as_bytes()).unwrap());
        }
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn parses_events_split_anywhere() {
        check(
            &["data: {\"a\":1}\n\ndata: [DONE]\n\n"],
            vec![SseEvent::Data("{\"a\":1}".into()), SseEvent::Done],
        );
        check(
            &["da", "ta: x\r", "\n\r\n: comment\n\n"],
            vec![SseEvent::Data("x".into())],
        );
        check(
            &["data: a\ndata: b\n\n"],
            vec![SseEvent::Data("a\nb".into())],
        );
        check(&["event: ping\n\n"], vec![]);
    }

    #[test]
    fn accumulates_choices_and_tools() {
        let mut acc = ReplyAccumulator::default();
        for c in [
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"Hel"}}]}),
            serde_json::json!({"choices":[{"index":1,"delta":{"content":"B"}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}),
            serde_json::json!({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}),
        ] {
            acc.observe_chunk(&c);
        }
        assert_eq!(acc.texts, vec!["Hello".to_string(), "B".to_string()]);
        assert_eq!(acc.tool_calls[0].3, "{\"a\":1}");
        assert_eq!(acc.finish_reason.as_deref(), Some("stop"));
        assert_eq!(acc.usage.unwrap().total_tokens, 5);
    }
}
