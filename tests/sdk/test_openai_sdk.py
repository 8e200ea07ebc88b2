"""The official `openai` client through the proxy: each route, streaming and
not, and what reached the upstream: exactly what the client sends without the
proxy, plus the knowledge block."""

import openai
import pytest
from conftest import one

SQL_TASK = "Write a Python function that builds an SQL query from a user-supplied name"
PLAIN_TASK = "What is the capital of France?"
KEY = "sk-sdk-test-SECRET"


def clients(upstream, proxy):
    direct = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{upstream.port}/v1", max_retries=0)
    proxied = openai.OpenAI(api_key=KEY, base_url=f"http://{proxy.addr}/v1", max_retries=0)
    return direct, proxied


def same_headers(a, b):
    for name in ("authorization", "content-type", "user-agent", "accept"):
        assert a.headers.get(name) == b.headers.get(name), name


def knowledge_message(message):
    return message.get("role") in ("system", "developer") and str(message.get("content", "")).startswith(
        "<security_knowledge")


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions(upstream, proxy, stream):
    direct, proxied = clients(upstream, proxy)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": SQL_TASK}]

    def call(client):
        result = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=messages, temperature=0.2, stream=stream,
            extra_body={"vendor_field": {"keep": [1, 2.50]}})
        parsed = result.parse()
        if stream:
            text = "".join(chunk.choices[0].delta.content or "" for chunk in parsed if chunk.choices)
        else:
            text = parsed.choices[0].message.content
        return result.headers, text

    _, direct_text = call(direct)
    sent = one(upstream)
    headers, proxied_text = call(proxied)
    got = one(upstream)

    assert proxied_text == direct_text == "mock answer"
    assert headers["x-rescue-augmented"] == "true"
    assert "CWE-89" in headers["x-rescue-cwes"].split(",")
    same_headers(sent, got)
    body, expected = got.json(), sent.json()
    injected = [m for m in body["messages"] if knowledge_message(m)]
    assert len(injected) == 1 and "CWE-89" in injected[0]["content"]
    body["messages"] = [m for m in body["messages"] if not knowledge_message(m)]
    assert body == expected
    assert list(body) == list(expected), "key order is kept"


def test_chat_without_security_relevance_is_byte_identical(upstream, proxy):
    direct, proxied = clients(upstream, proxy)
    for client in (direct, proxied):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": PLAIN_TASK}])
    sent, got = upstream.take()
    assert got.body == sent.body


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_completions(upstream, proxy, stream):
    direct, proxied = clients(upstream, proxy)
    prompt = "import sqlite3\n\ndef find_user(conn, name):\n    \"\"\"Run an SQL query selecting the user row by the user-supplied name.\"\"\"\n"

    def call(client):
        result = client.completions.with_raw_response.create(model="code-test", prompt=prompt, max_tokens=16,
                                                             stream=stream)
        parsed = result.parse()
        text = "".join(c.choices[0].text for c in parsed) if stream else parsed.choices[0].text
        return result.headers, text

    _, direct_text = call(direct)
    sent = one(upstream)
    headers, proxied_text = call(proxied)
    got = one(upstream)

    assert proxied_text == direct_text
    assert headers["x-rescue-augmented"] == "true"
    body, expected = got.json(), sent.json()
    augmented_prompt = body.pop("prompt")
    expected_prompt = expected.pop("prompt")
    assert body == expected
    assert augmented_prompt.endswith(expected_prompt)
    knowledge = augmented_prompt[: -len(expected_prompt)]
    assert knowledge.startswith("# <security_knowledge")
    assert all(line.startswith("#") for line in knowledge.splitlines()), "knowledge is a comment block"


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api(upstream, proxy, stream):
    direct, proxied = clients(upstream, proxy)

    def call(client):
        result = client.responses.with_raw_response.create(
            model="gpt-test", instructions="You are a careful engineer.", input=SQL_TASK, stream=stream)
        parsed = result.parse()
        if stream:
            text = "".join(e.delta for e in parsed if e.type == "response.output_text.delta")
        else:
            text = parsed.output_text
        return result.headers, text

    _, direct_text = call(direct)
    sent = one(upstream)
    headers, proxied_text = call(proxied)
    got = one(upstream)

    assert proxied_text == direct_text == "mock answer"
    assert headers["x-rescue-augmented"] == "true"
    same_headers(sent, got)
    body, expected = got.json(), sent.json()
    items = body.pop("input")
    assert expected.pop("input") == SQL_TASK
    assert body == expected, "instructions and every other field untouched"
    assert len(items) == 2 and knowledge_message(items[0])
    assert items[1] == {"role": "user", "content": SQL_TASK}


def test_responses_item_input_keeps_other_items(upstream, proxy):
    _, proxied = clients(upstream, proxy)
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Earlier turn"}]},
        {"type": "function_call", "call_id": "call_1", "name": "run", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": SQL_TASK}]},
    ]
    proxied.responses.create(model="gpt-test", input=items)
    got = one(upstream).json()["input"]
    assert [i for i in got if not knowledge_message(i)] == items
    assert knowledge_message(got[3]), "knowledge sits right before the last user message"


def test_models_pass_through(upstream, proxy):
    direct, proxied = clients(upstream, proxy)
    assert [m.id for m in proxied.models.list()] == [m.id for m in direct.models.list()] == ["mock-model"]


def test_errors_have_the_openai_shape(upstream, proxy):
    _, proxied = clients(upstream, proxy)
    with pytest.raises(openai.BadRequestError) as caught:
        proxied.post("/chat/completions", content=b"{not json", cast_to=object)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_json"
    assert upstream.take() == []
