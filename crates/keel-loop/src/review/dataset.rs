//! Training datasets from reviewed corrections: OpenAI chat fine-tuning lines (SFT) and TRL
//! preference lines (DPO), built from an interaction's prompt, what was served and the
//! reviewer's correction, every text passed through a redactor; strict checks of both formats.

use serde_json::{json, Map, Value};

/// One reviewed correction, as the exporter finds it.
#[derive(Debug, Clone)]
pub struct Correction<'a> {
    /// The interaction's `request_messages` (OpenAI `messages`).
    pub request_messages: &'a Value,
    /// What the client was served (first choice).
    pub served: &'a str,
    /// The reviewer's corrected response.
    pub corrected: &'a str,
}

/// Which corrections an export takes.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// A violation category or a verdict (`wrong_answer`, `outdated`, `ok`).
    pub category: Option<String>,
    pub tenant: Option<String>,
    pub locale: Option<String>,
    pub jurisdiction: Option<String>,
}

impl ExportFilter {
    /// Whether a `ReviewCompleted` event (tenant, time, payload) is selected.
    pub fn matches(&self, tenant: &str, at_ms: i64, label: &Value) -> bool {
        let ctx = &label["context"];
        self.from_ms.is_none_or(|f| at_ms >= f)
            && self.to_ms.is_none_or(|t| at_ms < t)
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.category.as_deref().is_none_or(|c| {
                label["category"].as_str() == Some(c) || label["verdict"].as_str() == Some(c)
            })
            && keel_core::Scope::of(None, self.locale.as_deref(), self.jurisdiction.as_deref())
                .covers(&keel_core::Segment {
                    tenant,
                    locale: ctx["locale"].as_str(),
                    jurisdiction: ctx["jurisdiction"].as_str(),
                    ..keel_core::Segment::default()
                })
    }
}

/// The text of an OpenAI message `content` (a string, or the text parts of an array).
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p["type"].as_str() == Some("text"))
                .filter_map(|p| p["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// The prompt as `(role, text)`: system/developer, user and assistant turns with text (tool
/// turns and empty turns are left out; `developer` becomes `system`). Redacted.
pub fn prompt(request_messages: &Value, redact: &dyn Fn(&str) -> String) -> Vec<Value> {
    let mut out = Vec::new();
    for m in request_messages.as_array().into_iter().flatten() {
        let role = match m["role"].as_str() {
            Some("system") | Some("developer") => "system",
            Some("user") => "user",
            Some("assistant") => "assistant",
            _ => continue,
        };
        let Some(text) = content_text(&m["content"]).filter(|t| !t.trim().is_empty()) else {
            continue;
        };
        out.push(json!({"role": role, "content": redact(&text)}));
    }
    out
}

/// An SFT line `{"messages": [...prompt, {"role":"assistant","content": correction}]}`, or
/// `None` when the prompt has no user turn or the correction is empty.
pub fn sft_line(c: &Correction<'_>, redact: &dyn Fn(&str) -> String) -> Option<Value> {
    let mut messages = prompt(c.request_messages, redact);
    if messages.last().is_some_and(|m| m["role"] == "assistant") {
        messages.pop();
    }
    if !messages.iter().any(|m| m["role"] == "user") || c.corrected.trim().is_empty() {
        return None;
    }
    messages.push(json!({"role": "assistant", "content": redact(c.corrected)}));
    let line = json!({"messages": messages});
    check_sft_line(&line).ok().map(|()| line)
}

/// A DPO line in TRL's conversational preference format: `{"prompt": [...], "chosen":
/// [{"role":"assistant","content": correction}], "rejected": [{"role":"assistant","content":
/// served}]}`, or `None` when there is no preference to learn (no user turn, empty texts, or
/// the correction equals what was served).
pub fn dpo_line(c: &Correction<'_>, redact: &dyn Fn(&str) -> String) -> Option<Value> {
    let mut messages = prompt(c.request_messages, redact);
    if messages.last().is_some_and(|m| m["role"] == "assistant") {
        messages.pop();
    }
    let chosen = redact(c.corrected);
    let rejected = redact(c.served);
    if chosen.trim().is_empty() || rejected.trim().is_empty() || chosen == rejected {
        return None;
    }
    let line = json!({
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    });
    check_dpo_line(&line).ok().map(|()| line)
}

fn exact_keys(o: &Map<String, Value>, keys: &[&str], what: &str) -> Result<(), String> {
    let mut got: Vec<&str> = o.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    if got != want {
        return Err(format!("{what}: keys {got:?}, expected exactly {want:?}"));
    }
    Ok(())
}

fn check_message(m: &Value, roles: &[&str], what: &str) -> Result<String, String> {
    let o = m
        .as_object()
        .ok_or_else(|| format!("{what}: not an object"))?;
    exact_keys(o, &["role", "content"], what)?;
    let role = o["role"]
        .as_str()
        .filter(|r| roles.contains(r))
        .ok_or_else(|| format!("{what}: role must be one of {roles:?}"))?;
    match o["content"].as_str() {
        Some(s) if !s.trim().is_empty() => Ok(role.to_string()),
        _ => Err(format!("{what}: content must be a non-empty string")),
    }
}

/// Checks an OpenAI chat fine-tuning line strictly: exactly `{"messages": [...]}`, each message
/// exactly `{role, content}` with role system|user|assistant and non-empty string content, at
/// least one user turn, the last turn the assistant's.
pub fn check_sft_line(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("line: not an object")?;
    exact_keys(o, &["messages"], "line")?;
    let msgs = o["messages"].as_array().ok_or("messages: not an array")?;
    let mut roles = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        roles.push(check_message(
            m,
            &["system", "user", "assistant"],
            &format!("messages[{i}]"),
        )?);
    }
    if !roles.iter().any(|r| r == "user") {
        return Err("messages: no user turn".into());
    }
    if roles.last().map(String::as_str) != Some("assistant") {
        return Err("messages: the last turn must be the assistant's".into());
    }
    Ok(())
}

/// Checks a TRL conversational preference line strictly: exactly `{prompt, chosen, rejected}`;
/// `prompt` a list of system|user|assistant messages ending with a user turn; `chosen` and
/// `rejected` one assistant message each, different.
pub fn check_dpo_line(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("line: not an object")?;
    exact_keys(o, &["prompt", "chosen", "rejected"], "line")?;
    let prompt = o["prompt"].as_array().ok_or("prompt: not an array")?;
    let mut last = String::new();
    for (i, m) in prompt.iter().enumerate() {
        last = check_message(m, &["system", "user", "assistant"], &format!("prompt[{i}]"))?;
    }
    if last != "user" {
        return Err("prompt: must end with a user turn".into());
    }
    for k in ["chosen", "rejected"] {
        let a = o[k].as_array().ok_or(format!("{k}: not an array"))?;
        if a.len() != 1 {
            return Err(format!("{k}: expected exactly one message"));
        }
        check_message(&a[0], &["assistant"], &format!("{k}[0]"))?;
    }
    if o["chosen"] == o["rejected"] {
        return Err("chosen equals rejected".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(s: &str) -> String {
        s.replace("bob@example.com", "[EMAIL]")
    }

    #[test]
    fn lines_are_built_redacted_and_checked() {
        let msgs = json!([{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": [{"type": "text", "text": "I am bob@example.com, rate?"}]},
                          {"role": "tool", "content": "x", "tool_call_id": "t"}]);
        let c = Correction {
            request_messages: &msgs,
            served: "8%",
            corrected: "10% since April",
        };
        let sft = sft_line(&c, &upper).unwrap();
        assert_eq!(
            sft,
            json!({"messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "I am [EMAIL], rate?"},
                {"role": "assistant", "content": "10% since April"}]})
        );
        let dpo = dpo_line(&c, &upper).unwrap();
        assert_eq!(dpo["chosen"][0]["content"], "10% since April");
        assert_eq!(dpo["rejected"][0]["content"], "8%");
        let same = Correction {
            served: "10% since April",
            ..c.clone()
        };
        assert!(dpo_line(&same, &upper).is_none());
        let no_user = json!([{"role": "system", "content": "x"}]);
        assert!(sft_line(
            &Correction {
                request_messages: &no_user,
                ..c
            },
            &upper
        )
        .is_none());
    }

    #[test]
    fn strict_checks_refuse_near_misses() {
        for bad in [
            json!({"messages": [{"role": "user", "content": "q"}]}),
            json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}),
            json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "name": "x"}]}),
            json!({"messages": [{"role": "tool", "content": "q"}, {"role": "assistant", "content": "a"}]}),
            json!({"messages": [], "extra": 1}),
        ] {
            assert!(check_sft_line(&bad).is_err(), "{bad}");
        }
        for bad in [
            json!({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}]}),
            json!({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "a"}]}),
            json!({"prompt": [{"role": "assistant", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}),
            json!({"prompt": "q", "chosen": "a", "rejected": "b"}),
        ] {
            assert!(check_dpo_line(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = ExportFilter {
            category: Some("S7".into()),
            locale: Some("ja".into()),
            ..Default::default()
        };
        assert!(f.matches(
            "acme",
            0,
            &json!({"verdict": "violation", "category": "S7", "context": {"locale": "ja-JP"}})
        ));
        assert!(!f.matches(
            "acme",
            0,
            &json!({"verdict": "wrong_answer", "context": {"locale": "ja-JP"}})
        ));
    }
}
