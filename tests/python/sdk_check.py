"""Drives the Keel gateway with the real `openai` SDK and checks what the API returns."""
import json
import os
import sys
import urllib.request

import openai
from openai import OpenAI

base = os.environ["KEEL_BASE_URL"]
key = os.environ["KEEL_API_KEY"]
reviewer = os.environ["KEEL_REVIEWER_KEY"]
root = os.environ["KEEL_ROOT_URL"]
client = OpenAI(base_url=base, api_key=key, max_retries=0)


def interaction(iid):
    req = urllib.request.Request(f"{root}/api/interactions/{iid}", headers={"Authorization": f"Bearer {reviewer}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


# JSON round trip; Keel's metadata reaches Keel, not the upstream.
raw = client.chat.completions.with_raw_response.create(
    model="mock-model",
    messages=[{"role": "user", "content": "hello sdk"}],
    metadata={"conversation_id": "sdk-conv", "locale": "en-GB", "topic": "billing"},
)
resp = raw.parse()
assert resp.choices[0].message.content == "echo: hello sdk", resp
assert resp.id.startswith("ix_"), resp.id
assert raw.headers["x-keel-interaction-id"] == resp.id
assert resp.usage.total_tokens > 0
rec = interaction(resp.id)
assert rec["context"]["conversation_id"] == "sdk-conv", rec
assert rec["context"]["topic"] == "billing", rec
assert rec["outcome"] == "ok", rec

# Streaming with usage: every chunk carries Keel's id.
stream = client.chat.completions.create(
    model="mock-model",
    messages=[{"role": "user", "content": "stream me please"}],
    stream=True,
    stream_options={"include_usage": True},
)
ids, text, usage = set(), "", None
for chunk in stream:
    ids.add(chunk.id)
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
assert text == "echo: stream me please", text
assert len(ids) == 1, ids
assert usage is not None and usage.total_tokens > 0
assert interaction(ids.pop())["response_text"] == [text]

# Errors surface as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="mock-model", messages=[{"content": "no role"}])
    sys.exit("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["code"] == "invalid_request", e.body

try:
    OpenAI(base_url=base, api_key="keel_wrong", max_retries=0).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "x"}])
    sys.exit("expected AuthenticationError")
except openai.AuthenticationError as e:
    assert e.status_code == 401

try:
    client.embeddings.create(model="mock-model", input="x")
    sys.exit("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.status_code == 404

models = client.models.list()
assert models.object == "list"

print("sdk checks passed")
