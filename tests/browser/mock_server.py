#!/usr/bin/env python3
"""A stand-in for `ocular serve`: a development aid only, never a test of the real server.

It implements the HTTP contract the chat page (crates/ocular-server/assets/chat.html), the
browser test (chat_page.mjs), the OpenAI-client test and scripts/load_test.py rely on, so they can
be written and checked without a model. It answers every question with "the blue square" and one
box; it is also the shortest description of that contract:

  GET  /                     the chat page (text/html)
  GET  /v1/models            {"object": "list", "data": [{"id": ..., "object": "model", ...}]}
  POST /v1/chat/completions  OpenAI chat request; images as `image_url` content parts holding
                             data URLs. Without "stream": a `chat.completion` whose
                             choices[0].message = {"role", "content", "boxes"} plus `usage`.
                             With "stream": true: Server-Sent Events (`data: {json}` + blank line)
                             of `chat.completion.chunk`s: a role chunk, one chunk per content
                             piece, a last chunk with finish_reason and delta.boxes, a usage-only
                             chunk (choices: []) when stream_options.include_usage, then
                             `data: [DONE]`.
  errors                     non-2xx status with {"error": {"message", "type", "param", "code"}}

Boxes are {"label": str | null, "box": [x1, y1, x2, y2], "image": i}: pixels of the original
image i (index among the request's images, in order of appearance). The mock puts its box on the
middle of the last image (PNG sizes are read from the header; other formats count as 100x100).

Mock-only extras: a question containing "[error]" gets a 400, so the page's error display can be
seen; --delay sets the pause between streamed pieces (to watch streaming or to load-test).

  python3 tests/browser/mock_server.py --port 8080 [--delay 0.05]
"""

import argparse
import base64
import json
import struct
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "crates/ocular-server/assets/chat.html"
MODEL = "ocular-mock"
PIECES = ["the", " blue", " square"]


class ApiError(Exception):
    def __init__(self, status, message, type_="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.body = status, {
            "error": {"message": message, "type": type_, "param": param, "code": code}
        }


def image_size(url):
    """(width, height) of a data-URL image: PNG from its IHDR, anything else 100x100."""
    if not url.startswith("data:") or "," not in url:
        raise ApiError(400, "image_url must be a data: URL", param="messages")
    try:
        data = base64.b64decode(url.split(",", 1)[1], validate=True)
    except ValueError:
        raise ApiError(400, "image data URL is not valid base64", param="messages")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return 100, 100


def read_request(body):
    """Checks the request the way the real server would and returns what the mock needs."""
    try:
        req = json.loads(body)
    except ValueError as e:
        raise ApiError(400, f"request body is not JSON: {e}")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    sizes, text = [], ""
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for p in parts:
            if p.get("type") == "image_url":
                sizes.append(image_size(p.get("image_url", {}).get("url", "")))
            elif p.get("type") == "text":
                text += p.get("text", "")
            else:
                raise ApiError(400, f"unsupported content part type {p.get('type')!r}",
                               param="messages")
    if "[error]" in text:
        raise ApiError(400, "mock error requested by the question", code="mock_error")
    max_tokens = req.get("max_tokens") or req.get("max_completion_tokens") or 256
    # A made-up but plausible prompt length: text by characters, 64 tokens per image.
    prompt_tokens = 8 + len(text) // 4 + 64 * len(sizes)
    return req, sizes, max_tokens, prompt_tokens


def answer(sizes, max_tokens):
    """The fixed answer cut to max_tokens, its finish reason, and its boxes."""
    pieces = PIECES[:max_tokens]
    finish = "stop" if len(pieces) == len(PIECES) else "length"
    boxes = []
    if sizes and finish == "stop":
        w, h = sizes[-1]
        boxes = [{"label": "the blue square", "box": [w / 4, h / 4, 3 * w / 4, 3 * h / 4],
                  "image": len(sizes) - 1}]
    return pieces, finish, boxes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like the real server
    delay = 0.0

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/":
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "ocular"}]})
        else:
            self.send_json(404, ApiError(404, f"no route for GET {self.path}",
                                         "not_found_error").body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/chat/completions":
            return self.send_json(404, ApiError(404, f"no route for POST {self.path}",
                                                "not_found_error").body)
        try:
            req, sizes, max_tokens, prompt_tokens = read_request(body)
        except ApiError as e:
            return self.send_json(e.status, e.body)
        pieces, finish, boxes = answer(sizes, max_tokens)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": MODEL}
        if not req.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces), "boxes": boxes}
            return self.send_json(200, {**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "finish_reason": finish}], "usage": usage})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(data):
            line = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        def chunk(delta, finish_reason=None):
            return {**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        event(chunk({"role": "assistant", "content": ""}))
        for piece in pieces:
            time.sleep(self.delay)
            event(chunk({"content": piece}))
        event(chunk({"boxes": boxes}, finish))
        if (req.get("stream_options") or {}).get("include_usage"):
            event({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds between streamed pieces")
    args = ap.parse_args()
    Handler.delay = args.delay
    ThreadingHTTPServer.request_queue_size = 128  # load tests open many connections at once
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"mock ocular serve on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
