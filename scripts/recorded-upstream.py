#!/usr/bin/env python3
"""An OpenAI-compatible upstream on loopback that answers from a recording.

Measures full mode (`rescue eval --mode full`) reproducibly and offline: the
answers a model gave to full mode's question are recorded once, keyed by the
SHA-256 of the question (the whole user message), and replayed here.

    scripts/recorded-upstream.py replay eval/full-mode/answers.jsonl
    scripts/recorded-upstream.py record questions.jsonl

`replay` answers each question from the recording and fails a question it
has no answer for with HTTP 404 (full mode then falls back to fast mode for
that task, and `rescue eval` counts the call as failed). `record` answers
every question with an empty draft and appends the questions it has not seen
to the file, one JSON line each: {"sha256", "question"}; they are what a
model is then asked.

Prints "listening on 127.0.0.1:PORT" once ready (port 0 unless --port).
Standard library only.
"""

import argparse
import hashlib
import http.server
import json
import sys
import threading


def key(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def load(path):
    answers = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "sha256" not in row or "answer" not in row:
                sys.exit(f"{path}:{n}: needs \"sha256\" and \"answer\"")
            answers[row["sha256"]] = row["answer"]
    return answers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["replay", "record"])
    parser.add_argument("file")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    answers = load(args.file) if args.action == "replay" else {}
    seen = set()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            try:
                request = json.loads(self.rfile.read(length))
                question = request["messages"][-1]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                self.reply(400, {"error": {"message": "not a chat completion", "type": "invalid_request_error"}})
                return
            digest = key(question)
            if args.action == "record":
                with lock:
                    if digest not in seen:
                        seen.add(digest)
                        with open(args.file, "a", encoding="utf-8") as f:
                            f.write(json.dumps({"sha256": digest, "question": question}) + "\n")
                answer = "CAUSES: none recorded yet.\n"
            else:
                answer = answers.get(digest)
                if answer is None:
                    self.reply(404, {"error": {"message": f"no recorded answer for {digest}", "type": "not_found"}})
                    return
            self.reply(200, {
                "id": "chatcmpl-recorded",
                "object": "chat.completion",
                "model": request.get("model", ""),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
            })

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
