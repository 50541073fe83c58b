#!/usr/bin/env python3
"""Load test for `ocular serve`: many streaming chat requests with an image, some at once.

Each of --concurrency threads sends requests one after another (over one kept-alive connection)
until --requests have been sent in all. For each request it measures the time to the first
content token (TTFT) and to the end of the stream; completion tokens come from the final usage
chunk (stream_options.include_usage), or are counted as content chunks if the server sends none.
Standard library only, so it runs anywhere Python 3.11 does.

  python3 scripts/load_test.py --url http://127.0.0.1:8080 --image tests/fixtures/image/noise_64x48.png \\
      --question "What is in the image?" -n 8 --requests 64 --max-tokens 64
"""

import argparse
import base64
import http.client
import json
import mimetypes
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Client:
    """One kept-alive connection per thread, as a real client would hold."""

    def __init__(self, url, timeout):
        self.url, self.timeout, self.local = urllib.parse.urlsplit(url), timeout, threading.local()

    def connection(self):
        if getattr(self.local, "conn", None) is None:
            cls = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            self.local.conn = cls(self.url.netloc, timeout=self.timeout)
        return self.local.conn

    def drop(self):
        if getattr(self.local, "conn", None) is not None:
            self.local.conn.close()
            self.local.conn = None

    def path(self, route):
        return self.url.path.rstrip("/") + route

    def get_json(self, route):
        conn = self.connection()
        conn.request("GET", self.path(route))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {route}: HTTP {resp.status}")
        return json.loads(body)

    def stream_chat(self, body):
        """Sends one streaming request; returns a result dict (failure: status or error set)."""
        start = time.perf_counter()
        result = {"ok": False, "status": None, "error": None, "ttft": None, "latency": None,
                  "tokens": 0}
        try:
            conn = self.connection()
            conn.request("POST", self.path("/v1/chat/completions"), body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            result["status"] = resp.status
            if resp.status != 200:
                raw = resp.read()  # read in full: leaves the connection usable
                try:
                    result["error"] = f"HTTP {resp.status}: {json.loads(raw)['error']['message']}"
                except (ValueError, KeyError, TypeError):
                    pass  # not the usual error body: the status alone says it
                return result
            chunks, usage, done = 0, None, False
            # SSE: `data: {json}` lines; blank lines and other fields are skipped.
            while line := resp.readline():
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(f"error event: {chunk['error'].get('message')}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        if result["ttft"] is None:
                            result["ttft"] = time.perf_counter() - start
            if not done:
                raise RuntimeError("stream ended without [DONE]")
            result["latency"] = time.perf_counter() - start
            result["tokens"] = usage["completion_tokens"] if usage else chunks
            result["ok"] = True
        except (OSError, http.client.HTTPException, ValueError, RuntimeError) as e:
            result["error"] = f"{type(e).__name__}: {e}"
            self.drop()  # a half-read response leaves the connection unusable
        return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    ap.add_argument("--image", required=True, type=Path, help="image file sent with every request")
    ap.add_argument("--question", default="What is in the image?")
    ap.add_argument("-n", "--concurrency", type=int, default=4, help="requests in flight at once")
    ap.add_argument("--requests", type=int, default=32, help="requests in all")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300, help="socket timeout, seconds")
    args = ap.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        ap.error("--concurrency and --requests must be at least 1")

    client = Client(args.url, args.timeout)
    try:  # the page does the same: the server's model name, else the default
        model = client.get_json("/v1/models")["data"][0]["id"]
    except Exception:
        model = "ocular"
    client.drop()  # the main thread's connection is not needed any more
    mime = mimetypes.guess_type(args.image)[0] or "image/png"
    image_url = f"data:{mime};base64,{base64.b64encode(args.image.read_bytes()).decode()}"
    body = json.dumps({
        "model": model, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": args.max_tokens,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": args.question},
        ]}],
    }).encode()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(lambda _: client.stream_chat(body), range(args.requests)))
    wall = time.perf_counter() - start

    good = [r for r in results if r["ok"]]
    failures = Counter(r["error"] or f"HTTP {r['status']}" for r in results if not r["ok"])
    tokens = sum(r["tokens"] for r in good)
    ttfts = [r["ttft"] for r in good if r["ttft"] is not None]
    latencies = [r["latency"] for r in good]

    def secs(v):
        return "-" if v is None else f"{v:.3f} s"

    print(f"model        {model}")
    print(f"requests     {len(results)} ({args.concurrency} concurrent, max_tokens {args.max_tokens})")
    print(f"failures     {sum(failures.values())}"
          + "".join(f"\n  {n} x {why}" for why, n in failures.most_common()))
    print(f"wall time    {wall:.3f} s")
    print(f"throughput   {tokens / wall:.1f} completion tokens/s, {len(good) / wall:.2f} requests/s"
          f" ({tokens} tokens)")
    print(f"TTFT         p50 {secs(percentile(ttfts, 50))}  p99 {secs(percentile(ttfts, 99))}")
    print(f"latency      p50 {secs(percentile(latencies, 50))}  p99 {secs(percentile(latencies, 99))}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
