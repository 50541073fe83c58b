#!/usr/bin/env python3
"""Checks that the official `openai` Python client works against a running `ocular serve`.

One plain and one streamed greedy request for the same image and question: both must answer,
report usage, and agree token for token (greedy decoding of the same request is deterministic).
With GROUND set, a grounding question too, whose message must carry Ocular's `boxes` field.
Prints one summary line and exits 0, or one line saying what failed and exits 1.

  OCULAR_URL  server to test (default http://127.0.0.1:8080)
  IMAGE       image file to ask about (required)
  QUESTION    what to ask (default "What is in the image?")
  GROUND      a question answered with a box, e.g. "Locate the blue square." (default: none)

  pip install -r tests/python/requirements.txt
  IMAGE=tests/fixtures/image/noise_64x48.png python tests/python/test_openai_client.py
"""

import base64
import mimetypes
import os
import sys
from pathlib import Path


def fail(reason):
    print(f"test_openai_client: FAIL: {' '.join(str(reason).split())}", file=sys.stderr)
    sys.exit(1)


def check(ok, reason):
    if not ok:
        fail(reason)


def data_url(path):
    mime = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def check_boxes(client, model, image, question):
    """The answer to a grounding question names a box, which comes back in `message.boxes`."""
    reply = client.chat.completions.create(
        model=model, temperature=0, max_tokens=64,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": question},
        ]}])
    message = reply.choices[0].message
    # `boxes` is Ocular's addition to the message; the client keeps unknown fields.
    boxes = getattr(message, "boxes", None)
    check(isinstance(boxes, list) and boxes, f"{question!r}: no boxes in the message ({message.content!r})")
    for b in boxes:
        check(len(b.get("box", [])) == 4 and all(isinstance(v, (int, float)) for v in b["box"]),
              f"{question!r}: a box is not four numbers: {b}")
        x1, y1, x2, y2 = b["box"]
        check(0 <= x1 <= x2 and 0 <= y1 <= y2, f"{question!r}: box corners out of order: {b}")
        check(b.get("image") == 0, f"{question!r}: box on image {b.get('image')}, not the only one (0)")
    return boxes


def run(client, image, question, ground):
    models = client.models.list().data
    check(len(models) >= 1, "GET /v1/models lists no model")
    model = models[0].id

    request = dict(
        model=model,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": question},
        ]}],
        temperature=0,
        max_tokens=32,
    )

    plain = client.chat.completions.create(**request)
    check(len(plain.choices) == 1, f"plain answer has {len(plain.choices)} choices, not 1")
    answer = plain.choices[0].message.content or ""
    check(answer.strip(), "plain answer is empty")
    check(plain.choices[0].finish_reason in ("stop", "length"),
          f"plain finish_reason is {plain.choices[0].finish_reason!r}")
    usage = plain.usage
    check(usage is not None, "plain answer has no usage")
    check(usage.prompt_tokens > 0, f"plain usage.prompt_tokens is {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"plain usage.completion_tokens is {usage.completion_tokens}")

    chunks = list(client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}))
    check(chunks, "the stream had no chunks")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == answer, f"streamed text {streamed!r} differs from plain answer {answer!r}")
    last = chunks[-1]
    check(last.usage is not None, "the stream's last chunk has no usage")
    check(not last.choices, "the stream's usage chunk should have choices: []")
    # Same greedy request, same tokens: the counts must match too.
    check((last.usage.prompt_tokens, last.usage.completion_tokens)
          == (usage.prompt_tokens, usage.completion_tokens),
          f"streamed usage {last.usage.prompt_tokens}+{last.usage.completion_tokens} differs "
          f"from plain {usage.prompt_tokens}+{usage.completion_tokens}")

    boxes = check_boxes(client, model, image, ground) if ground else []
    print(f"test_openai_client: ok: model {model}, answer {answer!r}, {len(boxes)} boxes, "
          f"usage {usage.prompt_tokens}+{usage.completion_tokens} tokens, "
          f"{len(chunks)} stream chunks")


def main():
    url = os.environ.get("OCULAR_URL", "http://127.0.0.1:8080").rstrip("/")
    image = os.environ.get("IMAGE")
    question = os.environ.get("QUESTION", "What is in the image?")
    ground = os.environ.get("GROUND")
    if not image or not Path(image).is_file():
        fail(f"IMAGE must name an image file (got {image!r})")
    try:
        import openai
    except ImportError:
        fail("the openai package is missing: pip install -r tests/python/requirements.txt")
    # No retries: a failure should show at once, not after the client's backoff.
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=120, max_retries=0)
    try:
        run(client, image, question, ground)
    except openai.APIStatusError as e:
        fail(f"{e.request.method} {e.request.url}: {e.message}")  # message: "Error code: N - ..."
    except openai.APIError as e:
        fail(f"{type(e).__name__} talking to {url}: {e.message}")


if __name__ == "__main__":
    main()
