"""Where does grounding fail? Linear probes and attention on a model's grounding prompts.

Input: an `ocular eval --images DIR --predictions FILE` run (its grounding lines give each
image, question and true box). For every grounding example the model (transformers'
Qwen2VLForConditionalGeneration, PIL processor) reads the prompt teacher-forced up to
`<|box_start|>(`, where the first digit of x1 is due, and the script reports, per layer:
- `find`: the share of the last position's attention (mean over heads) on the image tokens
  that the true box covers, against the share of image tokens it covers (1.0x: blind);
- `where`: how well a ridge regression from the last position's hidden state predicts the box
  centre (R^2 on held-out examples, x and y): does the answer position know where it is?
- `what`: how often a ridge regression from the same hidden state names the asked object's
  colour and shape (held-out accuracy): does the answer position know what it looks for?
- `place`: how well the image tokens' own hidden states predict their column and row (R^2):
  does the language model know where each image token lies?

Usage: .venv-ref/bin/python scripts/experiments/ground_probe.py MODEL_DIR PREDICTIONS IMAGES
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2VLForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from _common import pil_processor  # noqa: E402

BOX = re.compile(r"<\|box_start\|>\((\d+),(\d+)\),\((\d+),(\d+)\)<\|box_end\|>")


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = 50.0) -> tuple[int, np.ndarray]:
    """A ridge regression fitted on the first 70% of rows; its predictions for every row."""
    n = int(len(x) * 0.7)
    mu, sd = x[:n].mean(0), x[:n].std(0) + 1e-6
    xs = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.linalg.solve(xs[:n].T @ xs[:n] + alpha * np.eye(xs.shape[1]), xs[:n].T @ y[:n])
    return n, xs @ w


def ridge_r2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R^2 per target column on the held-out last 30% of rows."""
    n, pred = ridge_fit(x, y)
    true = y[n:]
    return 1 - ((pred[n:] - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def main() -> None:
    model_dir, preds, images = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    processor = pil_processor(model_dir)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    rows = [r for r in rows if r["task"] == "grounding"]
    layers = model.config.text_config.num_hidden_layers
    last, centre, find, place_h, place_rc = [], [], np.zeros((layers, 2)), [], []
    words = [r["expected"].split("<|object_ref_end|>")[0].split()[-2:] for r in rows]
    colours, shapes = sorted({c for c, _ in words}), sorted({s for _, s in words})
    what = np.array([[colours.index(c), shapes.index(s)] for c, s in words])
    for r in rows:
        m = BOX.search(r["expected"])
        x1, y1, x2, y2 = (int(v) / 1000 for v in m.groups())
        prefix = r["expected"][: r["expected"].index("<|box_start|>")] + "<|box_start|>("
        content = [{"type": "image"}, {"type": "text", "text": r["question"]}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False) + prefix
        image = Image.open(images / Path(r["images"][0]).name).convert("RGB")
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True, output_attentions=True)
        _, gh, gw = inputs["image_grid_thw"][0].tolist()
        h, w = gh // 2, gw // 2
        pos = (inputs["input_ids"][0] == image_id).nonzero()[:, 0]
        rr, cc = np.divmod(np.arange(h * w), w)
        # A token is in the box when its cell's centre is.
        inside = ((cc + 0.5) / w >= x1) & ((cc + 0.5) / w <= x2) & ((rr + 0.5) / h >= y1) & ((rr + 0.5) / h <= y2)
        if inside.any():
            for layer, att in enumerate(out.attentions):
                a = att[0, :, -1, pos].mean(0).numpy()
                find[layer] += [a[inside].sum() / a.sum(), inside.mean()]
        last.append(np.stack([hs[0, -1].numpy() for hs in out.hidden_states]))
        centre.append([(x1 + x2) / 2, (y1 + y2) / 2])
        if len(place_h) < 60:
            place_h.append(np.stack([hs[0, pos].numpy() for hs in out.hidden_states]))
            place_rc.append(np.c_[(cc + 0.5) / w, (rr + 0.5) / h])
    last, centre = np.stack(last), np.array(centre)
    print(f"{len(rows)} grounding examples; layer 0 is the embeddings")
    ph, prc = np.concatenate(place_h, axis=1), np.concatenate(place_rc)
    for layer in range(layers + 1):
        wx, wy = ridge_r2(last[:, layer], centre)
        px, py = ridge_r2(ph[layer], prc)
        n = int(len(rows) * 0.7)
        hits = []
        for k, names in enumerate([colours, shapes]):
            onehot = np.eye(len(names))[what[:, k]]
            _, fit = ridge_fit(last[:, layer], onehot)
            hits.append((fit[n:].argmax(1) == what[n:, k]).mean())
        line = (f"layer {layer}: where R2 x {wx:.2f} y {wy:.2f}   what colour {hits[0]:.2f} shape {hits[1]:.2f}"
                f"   place R2 column {px:.2f} row {py:.2f}")
        if layer > 0:
            f = find[layer - 1]
            line += f"   find {f[0] / f[1]:.1f}x (attention in box {f[0] / len(rows):.2f})"
        print(line)


if __name__ == "__main__":
    main()
