//! Applying policy decisions to OpenAI bodies: texts written back at their locations, blocked
//! replies as normal completions with `finish_reason: "content_filter"`.

use keel_core::RequestContext;
use keel_policy::{ActionKind, Decision, EvalContext};
use serde_json::{json, Value};

/// The policy's view of the request context, at `now` from the injected clock.
pub fn eval_context(ctx: &RequestContext, now: chrono::DateTime<chrono::Utc>) -> EvalContext {
    let mut c = EvalContext::new(ctx.tenant.clone(), now);
    c.locale = ctx.locale.clone();
    c.jurisdiction = ctx.jurisdiction.clone();
    c.topic = ctx.topic.clone();
    c.conversation_id = ctx.conversation_id.clone();
    c.user = ctx.user.clone();
    c
}

/// Resolves a location like `messages[2].content[0].text` to a mutable value.
fn at_mut<'a>(root: &'a mut Value, location: &str) -> Option<&'a mut Value> {
    let mut cur = root;
    for part in location.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get_mut(name)?;
        }
        for idx in rest.split('[').skip(1) {
            let i: usize = idx.strip_suffix(']')?.parse().ok()?;
            cur = cur.get_mut(i)?;
        }
    }
    Some(cur)
}

/// Writes every transformed text of `decision` back into `body`.
pub fn apply_transforms(body: &mut Value, decision: &Decision) {
    for t in &decision.transformed {
        match at_mut(body, &t.location) {
            Some(slot) if slot.is_string() => *slot = Value::String(t.text.clone()),
            _ => tracing::warn!(location = %t.location, "policy transform target not found"),
        }
    }
}

/// The most severe of several decisions' actions.
pub fn overall(decisions: &[&Decision]) -> ActionKind {
    decisions
        .iter()
        .map(|d| d.action)
        .max_by_key(|a| a.rank())
        .unwrap_or(ActionKind::Allow)
}

/// A completion that carries a blocking rule's message instead of a model reply.
pub fn blocked_completion(id: &str, model: &str, created: i64, n: u64, message: &str) -> Value {
    let choices: Vec<Value> = (0..n.max(1))
        .map(|i| {
            json!({"index": i, "message": {"role": "assistant", "content": message, "refusal": null},
                   "logprobs": null, "finish_reason": "content_filter"})
        })
        .collect();
    json!({"id": id, "object": "chat.completion", "created": created, "model": model,
           "choices": choices,
           "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
}

/// Replaces every choice's content of a completion with a blocking message.
pub fn block_completion(body: &mut Value, message: &str) {
    if let Some(choices) = body["choices"].as_array_mut() {
        for c in choices {
            c["message"] = json!({"role": "assistant", "content": message, "refusal": null});
            c["finish_reason"] = Value::String("content_filter".into());
        }
    }
}

/// A stream chunk with `content` for choice `index`, optionally finishing it.
pub fn chunk(
    id: &str,
    model: &str,
    created: i64,
    index: u64,
    content: &str,
    finish: Option<&str>,
) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": [{"index": index, "delta": {"content": content}, "logprobs": null, "finish_reason": finish}]})
}

/// The decisions as recorded in the interaction event.
pub fn record(input: &Decision, output: &[Decision]) -> Value {
    let mut all: Vec<&Decision> = vec![input];
    all.extend(output.iter());
    json!({
        "action": overall(&all).as_str(),
        "input": input,
        "output": output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve() {
        let mut v = json!({"messages": [{"content": "a"}, {"content": [{"type": "text", "text": "b"}]}],
                           "choices": [{"message": {"content": "c"}}]});
        for (loc, want) in [
            ("messages[0].content", Some("a")),
            ("messages[1].content[0].text", Some("b")),
            ("choices[0].message.content", Some("c")),
            ("messages[5].content", None),
            ("messages[x].content", None),
        ] {
            assert_eq!(
                at_mut(&mut v, loc)
                    .and_then(|x| x.as_str().map(str::to_string))
                    .as_deref(),
                want,
                "{loc}"
            );
        }
    }
}
