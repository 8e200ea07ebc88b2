"""The official `anthropic` client through the proxy: messages (streaming and
not) and count_tokens, which must count the augmentation too."""

import anthropic
import pytest
from conftest import one

C_TASK = "Write a C function that copies a user-supplied string into a fixed-size buffer"
KEY = "sk-ant-sdk-test-SECRET"


def clients(upstream, proxy):
    direct = anthropic.Anthropic(api_key=KEY, base_url=f"http://127.0.0.1:{upstream.port}", max_retries=0)
    proxied = anthropic.Anthropic(api_key=KEY, base_url=f"http://{proxy.addr}", max_retries=0)
    return direct, proxied


@pytest.mark.parametrize("stream", [False, True])
def test_messages(upstream, proxy, stream):
    direct, proxied = clients(upstream, proxy)
    system = [{"type": "text", "text": "You write C.", "cache_control": {"type": "ephemeral"}}]

    def call(client):
        kwargs = dict(model="claude-test", max_tokens=64, system=system,
                      messages=[{"role": "user", "content": C_TASK}])
        if stream:
            with client.messages.stream(**kwargs) as s:
                text = "".join(s.text_stream)
                headers = s.response.headers
        else:
            raw = client.messages.with_raw_response.create(**kwargs)
            text, headers = raw.parse().content[0].text, raw.headers
        return headers, text

    _, direct_text = call(direct)
    sent = one(upstream)
    headers, proxied_text = call(proxied)
    got = one(upstream)

    assert proxied_text == direct_text == "mock answer"
    assert headers["x-rescue-augmented"] == "true"
    for name in ("x-api-key", "anthropic-version", "content-type"):
        assert got.headers.get(name) == sent.headers.get(name), name
    body, expected = got.json(), sent.json()
    blocks = body.pop("system")
    assert blocks[:-1] == expected.pop("system"), "the client's blocks (and cache_control) come first, unchanged"
    assert blocks[-1]["type"] == "text" and blocks[-1]["text"].startswith("<security_knowledge")
    assert body == expected


def test_count_tokens_includes_the_augmentation(upstream, proxy):
    direct, proxied = clients(upstream, proxy)
    kwargs = dict(model="claude-test", messages=[{"role": "user", "content": C_TASK}])
    plain = direct.messages.count_tokens(**kwargs).input_tokens
    counted = proxied.messages.count_tokens(**kwargs).input_tokens
    sent, got = upstream.take()
    assert got.path == sent.path == "/v1/messages/count_tokens"
    assert counted > plain + 50, "the knowledge block is counted"
    # The same knowledge that a messages call would carry.
    proxied.messages.create(max_tokens=8, **kwargs)
    assert one(upstream).json()["system"] == got.json()["system"]


def test_errors_have_the_anthropic_shape(upstream, proxy):
    _, proxied = clients(upstream, proxy)
    with pytest.raises(anthropic.BadRequestError) as caught:
        proxied.post("/v1/messages", content=b"[oops", cast_to=object)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert upstream.take() == []
