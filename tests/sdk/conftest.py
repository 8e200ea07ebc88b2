"""Fixtures for the SDK-level tests: a recording mock upstream on loopback that
speaks enough of the OpenAI and Anthropic APIs for the official clients, and
the real `rescue` binary in front of it."""

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sse(events):
    """Server-sent events: (event name or None, JSON payload or raw string)."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return out


def chat_completion(model):
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "mock answer"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chat_chunks(model):
    def chunk(delta, finish=None):
        return {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    return sse(
        [(None, chunk({"role": "assistant", "content": ""})), (None, chunk({"content": "mock "})),
         (None, chunk({"content": "answer"})), (None, chunk({}, "stop")), (None, "[DONE]")]
    )


def text_completion(model, stream):
    body = {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"text": "    return 1\n", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    }
    if not stream:
        return body
    return sse([(None, body), (None, "[DONE]")])


def response_object(model, status="completed", text="mock answer"):
    output = []
    if status == "completed":
        output = [{
            "type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }]
    return {
        "id": "resp_mock", "object": "response", "created_at": 1700000000, "status": status,
        "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
        "tools": [], "error": None, "incomplete_details": None, "instructions": None,
        "metadata": {}, "temperature": 1.0, "top_p": 1.0,
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


def response_events(model):
    return sse([
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": response_object(model, "in_progress")}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                        "item_id": "msg_mock", "output_index": 0, "content_index": 0,
                                        "delta": "mock answer", "logprobs": []}),
        ("response.completed", {"type": "response.completed", "sequence_number": 2,
                                "response": response_object(model)}),
    ])


def anthropic_message(model):
    return {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "mock answer"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def anthropic_events(model):
    start = anthropic_message(model)
    start["content"] = []
    start["stop_reason"] = None
    return sse([
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "mock answer"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ])


class Recorded:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self):
        return json.loads(self.body)


class MockUpstream:
    """Answers like OpenAI under /v1/{chat/completions,completions,responses,models}
    and like Anthropic under /v1/messages; records every request."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _record(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with mock.lock:
                    # Header names are case-insensitive; hyper writes them lowercase.
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    mock.requests.append(Recorded(self.command, self.path, headers, body))
                return body

            def _send_json(self, payload, status=200):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_stream(self, chunks):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in chunks:
                    data = chunk.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.01)
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):
                self._record()
                if self.path.startswith("/v1/models"):
                    return self._send_json({"object": "list", "data": [
                        {"id": "mock-model", "object": "model", "created": 1700000000, "owned_by": "mock"}]})
                self._send_json({"error": {"message": "not found"}}, 404)

            def do_POST(self):
                body = json.loads(self._record() or b"{}")
                model = body.get("model", "mock-model")
                stream = bool(body.get("stream"))
                path = self.path.split("?")[0]
                if path == "/v1/chat/completions":
                    return self._send_stream(chat_chunks(model)) if stream else self._send_json(chat_completion(model))
                if path == "/v1/completions":
                    out = text_completion(model, stream)
                    return self._send_stream(out) if stream else self._send_json(out)
                if path == "/v1/responses":
                    return self._send_stream(response_events(model)) if stream else self._send_json(response_object(model))
                if path == "/v1/messages":
                    return self._send_stream(anthropic_events(model)) if stream else self._send_json(anthropic_message(model))
                if path == "/v1/messages/count_tokens":
                    # A stand-in tokenizer: what matters is that it sees the whole body.
                    return self._send_json({"input_tokens": len(json.dumps(body)) // 4})
                self._send_json({"error": {"message": "not found"}}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self):
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def close(self):
        self.server.shutdown()


def one(upstream):
    """The single request the upstream received since the last take."""
    requests = upstream.take()
    assert len(requests) == 1, [r.path for r in requests]
    return requests[0]


class Proxy:
    def __init__(self, upstream_port):
        binary = os.environ.get("RESCUE_BIN", str(REPO / "target" / "debug" / "rescue"))
        assert Path(binary).exists(), f"{binary} not built: run `cargo test --workspace` first"
        env = dict(os.environ, XDG_CACHE_HOME=str(REPO / "target" / "test-plugin-cache"), RESCUE_LOG="info")
        base = f"http://127.0.0.1:{upstream_port}/v1"
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--upstream", base, "--anthropic-upstream", base,
             "--kb", str(REPO / "kb.sqlite")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"proxy did not start: {line}{self.process.stderr.read()}")
        self.addr = line.split()[-1]

    def close(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="session")
def upstream():
    mock = MockUpstream()
    yield mock
    mock.close()


@pytest.fixture(scope="session")
def proxy(upstream):
    p = Proxy(upstream.port)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def fresh_recording(upstream):
    upstream.take()
    yield
