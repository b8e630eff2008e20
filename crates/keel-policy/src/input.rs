//! What a policy evaluates: the texts of a request and its reply as located segments, and the
//! request context (tenant, locale, jurisdiction, topic, conversation, and the caller's `now`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// When a rule runs: on the request before the upstream, or on the reply before the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Input,
    Output,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Input => "input",
            Phase::Output => "output",
        }
    }
}

/// What kind of text a segment holds: prose (message content, a choice) or tool-call arguments
/// (JSON text: redactions and rewrites apply, appended notices do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    #[default]
    Content,
    ToolArguments,
}

/// One piece of text with where it came from, e.g. `messages[2].content[0].text`,
/// `choices[1].message.content`, `choices[0].message.tool_calls[0].function.arguments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextSegment {
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub kind: SegmentKind,
    pub text: String,
}

impl TextSegment {
    pub fn new(location: impl Into<String>, role: Option<&str>, text: impl Into<String>) -> Self {
        TextSegment {
            location: location.into(),
            role: role.map(str::to_string),
            kind: SegmentKind::Content,
            text: text.into(),
        }
    }
}

/// The request context rules see as `context` and scopes match against. Field names follow
/// `keel_core::RequestContext`; `now` is supplied by the caller (the injected clock): the policy
/// never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalContext {
    pub now: DateTime<Utc>,
    pub tenant: String,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub jurisdiction: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

impl EvalContext {
    /// A context for `tenant` at `now`, everything else unset.
    pub fn new(tenant: impl Into<String>, now: DateTime<Utc>) -> Self {
        EvalContext {
            now,
            tenant: tenant.into(),
            locale: None,
            jurisdiction: None,
            topic: None,
            conversation_id: None,
            user: None,
        }
    }

    /// Where this request sits, for matching scopes.
    pub fn segment(&self) -> keel_core::Segment<'_> {
        keel_core::Segment {
            tenant: &self.tenant,
            locale: self.locale.as_deref(),
            jurisdiction: self.jurisdiction.as_deref(),
            topic: self.topic.as_deref(),
            subtopic: None,
        }
    }
}

/// Everything one evaluation reads. The input phase scans and transforms `request`; the output
/// phase scans and transforms `response`, and its rules can still read the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalInput {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub request: Vec<TextSegment>,
    #[serde(default)]
    pub response: Vec<TextSegment>,
    pub context: EvalContext,
}

impl EvalInput {
    pub fn new(context: EvalContext) -> Self {
        EvalInput {
            model: None,
            request: Vec::new(),
            response: Vec::new(),
            context,
        }
    }

    /// Adds a user message (builder, for tests and tools).
    pub fn user(mut self, text: &str) -> Self {
        let i = self.request.len();
        self.request.push(TextSegment::new(
            format!("messages[{i}].content"),
            Some("user"),
            text,
        ));
        self
    }

    /// Adds a reply choice (builder, for tests and tools).
    pub fn reply(mut self, text: &str) -> Self {
        let i = self.response.len();
        self.response.push(TextSegment::new(
            format!("choices[{i}].message.content"),
            Some("assistant"),
            text,
        ));
        self
    }

    /// The segments a phase scans and transforms.
    pub fn segments(&self, phase: Phase) -> &[TextSegment] {
        match phase {
            Phase::Input => &self.request,
            Phase::Output => &self.response,
        }
    }

    /// Reads every text of an OpenAI chat-completions request body: string contents, every
    /// `text` content part, and the arguments of tool calls in assistant messages.
    pub fn from_openai_request(body: &serde_json::Value, context: EvalContext) -> Self {
        let mut input = EvalInput::new(context);
        input.model = body
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let messages = body
            .get("messages")
            .and_then(|m| m.as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (i, msg) in messages.iter().enumerate() {
            let role = msg.get("role").and_then(|r| r.as_str());
            push_content(
                &mut input.request,
                msg.get("content"),
                &format!("messages[{i}].content"),
                role,
            );
            push_tool_calls(
                &mut input.request,
                msg.get("tool_calls"),
                &format!("messages[{i}].tool_calls"),
                role,
            );
        }
        input
    }

    /// Adds every text of an OpenAI chat-completions response body: each choice's content and
    /// tool-call arguments (all choices when `n > 1`).
    pub fn with_openai_response(mut self, body: &serde_json::Value) -> Self {
        let choices = body
            .get("choices")
            .and_then(|c| c.as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (pos, choice) in choices.iter().enumerate() {
            let i = choice
                .get("index")
                .and_then(|x| x.as_u64())
                .map_or(pos, |x| x as usize);
            let msg = choice.get("message");
            let content = msg.and_then(|m| m.get("content"));
            push_content(
                &mut self.response,
                content,
                &format!("choices[{i}].message.content"),
                Some("assistant"),
            );
            push_tool_calls(
                &mut self.response,
                msg.and_then(|m| m.get("tool_calls")),
                &format!("choices[{i}].message.tool_calls"),
                Some("assistant"),
            );
        }
        self
    }
}

fn push_content(
    out: &mut Vec<TextSegment>,
    content: Option<&serde_json::Value>,
    location: &str,
    role: Option<&str>,
) {
    match content {
        Some(serde_json::Value::String(s)) => out.push(TextSegment::new(location, role, s.clone())),
        Some(serde_json::Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                if let Some(t) = part.get("text").and_then(|t| t.as_str()) {
                    out.push(TextSegment::new(format!("{location}[{j}].text"), role, t));
                }
            }
        }
        _ => {}
    }
}

fn push_tool_calls(
    out: &mut Vec<TextSegment>,
    calls: Option<&serde_json::Value>,
    location: &str,
    role: Option<&str>,
) {
    let Some(calls) = calls.and_then(|c| c.as_array()) else {
        return;
    };
    for (k, call) in calls.iter().enumerate() {
        if let Some(args) = call
            .get("function")
            .and_then(|f| f.get("arguments"))
            .and_then(|a| a.as_str())
        {
            out.push(TextSegment {
                location: format!("{location}[{k}].function.arguments"),
                role: role.map(str::to_string),
                kind: SegmentKind::ToolArguments,
                text: args.to_string(),
            });
        }
    }
}
