//! Validation of a chat completion request: known fields type-checked, unknown ones kept.

use keel_core::RequestContext;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// A validated request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`
    pub include_usage: bool,
    pub n: u64,
    pub context: RequestContext,
    /// The `messages` array as sent.
    pub messages: Value,
    /// The body to forward: the client's, minus Keel's own metadata keys.
    pub forward: Value,
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(param: &str, want: &str, got: &Value) -> GatewayError {
    GatewayError::bad_param(
        param,
        format!(
            "Invalid type for '{param}': expected {want}, but got {}.",
            kind(got)
        ),
    )
}

fn check_number(obj: &Map<String, Value>, k: &str, min: f64, max: f64) -> Result<(), GatewayError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (min..=max).contains(&x) {
                Ok(())
            } else {
                Err(GatewayError::bad_param(
                    k,
                    format!("Invalid '{k}': {x} is outside [{min}, {max}]."),
                ))
            }
        }
        Some(v) => Err(wrong(k, "a number", v)),
    }
}

fn check_int(
    obj: &Map<String, Value>,
    k: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, GatewayError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(GatewayError::bad_param(
                k,
                format!("Invalid '{k}': expected an integer in [{min}, {max}], got {n}."),
            )),
        },
        Some(v) => Err(wrong(k, "an integer", v)),
    }
}

fn check_messages(v: Option<&Value>) -> Result<Value, GatewayError> {
    let msgs = match v {
        None => {
            return Err(GatewayError::bad_param(
                "messages",
                "Missing required parameter: 'messages'.",
            ))
        }
        Some(Value::Array(a)) => a,
        Some(other) => return Err(wrong("messages", "an array", other)),
    };
    if msgs.is_empty() {
        return Err(GatewayError::bad_param(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
        ));
    }
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let obj = m.as_object().ok_or_else(|| wrong(&p, "an object", m))?;
        match obj.get("role") {
            None => {
                return Err(GatewayError::bad_param(
                    &format!("{p}.role"),
                    format!("Missing required parameter: '{p}.role'."),
                ))
            }
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
            Some(Value::String(r)) => {
                return Err(GatewayError::bad_param(
                    &format!("{p}.role"),
                    format!(
                        "Invalid value for '{p}.role': '{r}'. Supported values are: {}.",
                        ROLES.join(", ")
                    ),
                ))
            }
            Some(other) => return Err(wrong(&format!("{p}.role"), "a string", other)),
        }
        match obj.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let pp = format!("{p}.content[{j}]");
                    let po = part
                        .as_object()
                        .ok_or_else(|| wrong(&pp, "an object", part))?;
                    match po.get("type") {
                        Some(Value::String(_)) => {}
                        Some(other) => return Err(wrong(&format!("{pp}.type"), "a string", other)),
                        None => {
                            return Err(GatewayError::bad_param(
                                &format!("{pp}.type"),
                                format!("Missing required parameter: '{pp}.type'."),
                            ))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(wrong(
                    &format!("{p}.content"),
                    "a string or an array",
                    other,
                ))
            }
        }
    }
    Ok(Value::Array(msgs.clone()))
}

/// Validates `body` and splits out Keel's context. `tenant` comes from the API key.
pub fn validate_chat_request(body: Value, tenant: &str) -> Result<ChatRequest, GatewayError> {
    let Value::Object(mut obj) = body else {
        return Err(GatewayError::bad(format!(
            "The request body must be a JSON object, not {}.",
            kind(&body)
        )));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) => {
            return Err(GatewayError::bad_param(
                "model",
                "Invalid 'model': empty string.",
            ))
        }
        Some(other) => return Err(wrong("model", "a string", other)),
        None => {
            return Err(GatewayError::bad_param(
                "model",
                "Missing required parameter: 'model'.",
            ))
        }
    };
    let messages = check_messages(obj.get("messages"))?;
    check_number(&obj, "temperature", 0.0, 2.0)?;
    check_number(&obj, "top_p", 0.0, 1.0)?;
    let n = check_int(&obj, "n", 1, 128)?.unwrap_or(1);
    check_int(&obj, "max_tokens", 0, u32::MAX as u64)?;
    check_int(&obj, "max_completion_tokens", 0, u32::MAX as u64)?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(wrong("stream", "a boolean", other)),
    };
    match obj.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => {}
            Some(other) => return Err(wrong("stream_options.include_usage", "a boolean", other)),
        },
        Some(other) => return Err(wrong("stream_options", "an object", other)),
    }
    match obj.get("stop") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(other) => return Err(wrong("stop", "a string or an array of strings", other)),
    }
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            if let Some((i, t)) = a.iter().enumerate().find(|(_, t)| !t.is_object()) {
                return Err(wrong(&format!("tools[{i}]"), "an object", t));
            }
        }
        Some(other) => return Err(wrong("tools", "an array", other)),
    }
    let mut context = RequestContext {
        tenant: tenant.to_string(),
        ..Default::default()
    };
    match obj.get_mut("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => {
            for key in RequestContext::METADATA_KEYS {
                let value = match meta.remove(key) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.len() <= 512 => Some(s),
                    Some(Value::String(_)) => {
                        return Err(GatewayError::bad_param(
                            &format!("metadata.{key}"),
                            format!("Invalid 'metadata.{key}': longer than 512 characters."),
                        ))
                    }
                    Some(other) => {
                        return Err(wrong(&format!("metadata.{key}"), "a string", &other))
                    }
                };
                match key {
                    "conversation_id" => context.conversation_id = value,
                    "locale" => context.locale = value,
                    "jurisdiction" => context.jurisdiction = value,
                    "user" => context.user = value,
                    _ => context.topic = value,
                }
            }
            if meta.is_empty() {
                obj.remove("metadata");
            }
        }
        Some(other) => return Err(wrong("metadata", "an object", other)),
    }
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        n,
        context,
        messages,
        forward: Value::Object(obj),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Ok(param)` expected → validation passes; `Err(param)` → fails naming that param.
    fn check(body: Value, expected: Result<(), Option<&str>>) {
        let got = validate_chat_request(body.clone(), "t");
        match (&got, expected) {
            (Ok(_), Ok(())) => {}
            (Err(GatewayError::BadRequest { param, .. }), Err(p)) => {
                assert_eq!(param.as_deref(), p, "body {body}")
            }
            _ => panic!("body {body}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn known_fields_are_type_checked() {
        let m = json!([{"role": "user", "content": "hi"}]);
        check(json!({"model": "x", "messages": m}), Ok(()));
        check(
            json!({"model": "x", "messages": m, "unknown_field": {"a": 1}}),
            Ok(()),
        );
        check(json!({"messages": m}), Err(Some("model")));
        check(json!({"model": 3, "messages": m}), Err(Some("model")));
        check(json!({"model": "x"}), Err(Some("messages")));
        check(json!({"model": "x", "messages": []}), Err(Some("messages")));
        check(
            json!({"model": "x", "messages": "hi"}),
            Err(Some("messages")),
        );
        check(
            json!({"model": "x", "messages": [{"content": "hi"}]}),
            Err(Some("messages[0].role")),
        );
        check(
            json!({"model": "x", "messages": [{"role": "wizard"}]}),
            Err(Some("messages[0].role")),
        );
        check(
            json!({"model": "x", "messages": [{"role": "user", "content": 5}]}),
            Err(Some("messages[0].content")),
        );
        check(
            json!({"model": "x", "messages": [{"role": "user", "content": [{"text": "a"}]}]}),
            Err(Some("messages[0].content[0].type")),
        );
        check(
            json!({"model": "x", "messages": m, "temperature": "hot"}),
            Err(Some("temperature")),
        );
        check(
            json!({"model": "x", "messages": m, "temperature": 3}),
            Err(Some("temperature")),
        );
        check(json!({"model": "x", "messages": m, "top_p": 0.5}), Ok(()));
        check(json!({"model": "x", "messages": m, "n": 0}), Err(Some("n")));
        check(
            json!({"model": "x", "messages": m, "n": 1.5}),
            Err(Some("n")),
        );
        check(
            json!({"model": "x", "messages": m, "max_tokens": -1}),
            Err(Some("max_tokens")),
        );
        check(
            json!({"model": "x", "messages": m, "max_completion_tokens": "10"}),
            Err(Some("max_completion_tokens")),
        );
        check(
            json!({"model": "x", "messages": m, "stream": "yes"}),
            Err(Some("stream")),
        );
        check(
            json!({"model": "x", "messages": m, "stream_options": {"include_usage": 1}}),
            Err(Some("stream_options.include_usage")),
        );
        check(
            json!({"model": "x", "messages": m, "stop": ["a", 1]}),
            Err(Some("stop")),
        );
        check(
            json!({"model": "x", "messages": m, "tools": [1]}),
            Err(Some("tools[0]")),
        );
        check(
            json!({"model": "x", "messages": m, "metadata": "x"}),
            Err(Some("metadata")),
        );
        check(
            json!({"model": "x", "messages": m, "metadata": {"locale": 5}}),
            Err(Some("metadata.locale")),
        );
        check(json!([1, 2]), Err(None));
    }

    #[test]
    fn keel_metadata_is_stripped_and_the_rest_kept() {
        let body = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"conversation_id": "c1", "locale": "ja-JP", "jurisdiction": "JP",
                          "user": "u1", "topic": "tax", "app_key": "kept"},
            "seed": 7});
        let r = validate_chat_request(body, "acme").unwrap();
        assert_eq!(r.context.conversation_id.as_deref(), Some("c1"));
        assert_eq!(r.context.topic.as_deref(), Some("tax"));
        assert_eq!(r.context.tenant, "acme");
        assert_eq!(r.forward["metadata"], json!({"app_key": "kept"}));
        assert_eq!(r.forward["seed"], json!(7));
        let r = validate_chat_request(
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "metadata": {"locale": "en"}}),
            "acme",
        )
        .unwrap();
        assert!(r.forward.get("metadata").is_none());
    }
}
