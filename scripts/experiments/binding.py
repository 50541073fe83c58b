"""Why the built-in model does not look: a small transformers sandbox (not a test, not CI).

Trains the built-in architecture (a Qwen2-VL model folder made by `ocular train`, e.g. the
`out` of a 1-step run, or models/builtin for its config) in PyTorch on PIL-drawn scenes, on one
question kind at a time, and prints the answer loss, the batch accuracy of the first answer
token, and the mean norm of the vision features, every 20 steps.

    .venv-ref/bin/python scripts/experiments/binding.py MODEL_DIR TASK [--steps N] [--lr X]
        [--aux W] [--text-first] [--vision-only OUT]

TASK: `colour1` (one circle: "What colour is the circle?"), `exist3` (three objects: "Is
there a red object?"), `bind3` (three objects: "What colour is the square?").
--aux W adds W x a dense auxiliary loss: a throwaway linear head on every merged vision token
predicts the colour and shape of the object under it (or background).

--text-first puts the question before the image in the prompt. --vision-only OUT trains the
vision tower alone on the dense loss and saves the model (and the head, head.pt, which a
later run with --aux picks up) to OUT.

Measured (2 cores, batch 16, lr 1e-3, from an `ocular train` init): colour1 reaches 100% in
~40-60 steps; exist3 and bind3 stay at chance for 300-1500 steps while the feature norm
grows to ~100-500; a lower lr, a one-object warm-up, capping the merger's weight norms and a
feature-norm penalty did not help. --aux 1 keeps the norm at ~15-25 but bind3 leaves chance
only slowly (loss 1.8 -> ~1.5 by step 600).
With shape labelled only at the token holding each object's centre (a token at an object's
edge cannot tell its shape), --vision-only learns shape: 0.45 by step 850 and 0.14 by step
2000 (chance 1.10), colour 0.12, at ~0.2 s a step.
Two findings together make bind3 learnable:
- a vision tower that already knows shape (the --vision-only output) is not enough with the
  image first: bind3 with --aux 1 is still at loss ~1.45 after 560 steps;
- with --text-first as well (every vision token can attend to the question), bind3 turns at
  step ~250 and sits at loss 0.2-0.6, accuracy 0.8-0.94, over steps 300-580.
`ocular train` does both: its `[dense]` stage and the question-first chat template.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60),
           "yellow": (230, 220, 40), "purple": (140, 50, 180), "orange": (240, 140, 30)}
NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle"]
SIDE, CELL = 112, 28  # canvas, and the pixels one merged token covers (14 x 2)


def draw(d: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: str) -> None:
    x0, y0, x1, y1 = box
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)


def scene(n: int) -> tuple[Image.Image, list[tuple[tuple[int, int, int, int], str, str]]]:
    """n objects of distinct colours and shapes, one per column so they never overlap."""
    bg = random.randint(30, 230)
    im = Image.new("RGB", (SIDE, SIDE), (bg, bg, bg))
    d = ImageDraw.Draw(im)
    objects = []
    col_w = SIDE // n
    for k, (c, s) in enumerate(zip(random.sample(NAMES, n), random.sample(SHAPES, n))):
        size = random.randint(16, min(30, col_w)) if n > 1 else random.randint(20, 50)
        x = k * col_w + random.randint(0, col_w - size)
        y = random.randint(0, SIDE - size)
        box = (x, y, x + size, y + size)
        draw(d, s if n > 1 else "circle", box, c)
        objects.append((box, c, s if n > 1 else "circle"))
    return im, objects


def example(task: str):
    if task == "colour1":
        im, objs = scene(1)
        return im, objs, "What colour is the circle?", objs[0][1]
    im, objs = scene(3)
    if task == "exist3":
        present = [o[1] for o in objs]
        asked = random.choice(present) if random.random() < 0.5 else random.choice([c for c in NAMES if c not in present])
        return im, objs, f"Is there a {asked} object?", "yes" if asked in present else "no"
    box, colour, shape = random.choice(objs)
    return im, objs, f"What colour is the {shape}?", colour


def token_labels(objs, grid: int) -> tuple[list[int], list[int]]:
    """Colour (len(NAMES) = background) of the object under each token; shape (-100 = none)
    at the token holding each object's centre."""
    colours, shapes = [], []
    for t in range(grid * grid):
        cy, cx = (t // grid) * CELL + CELL // 2, (t % grid) * CELL + CELL // 2
        best = None
        for (x0, y0, x1, y1), c, s in objs:
            overlap = max(0, min(x1, cx + CELL // 2) - max(x0, cx - CELL // 2)) * max(0, min(y1, cy + CELL // 2) - max(y0, cy - CELL // 2))
            if overlap > 60 and (best is None or overlap > best[0]):
                best = (overlap, NAMES.index(c), SHAPES.index(s))
        colours.append(best[1] if best else len(NAMES))
        shapes.append(-100)
    for (x0, y0, x1, y1), _, s in objs:
        shapes[int((y0 + y1) / 2 // CELL) * grid + int((x0 + x1) / 2 // CELL)] = SHAPES.index(s)
    return colours, shapes


def dense_loss(head, features, batch, grid):
    labels = [token_labels(b[1], grid) for b in batch]
    colours = torch.tensor([c for c, _ in labels]).reshape(-1)
    shapes = torch.tensor([s for _, s in labels]).reshape(-1)
    out = head(features)
    colour = torch.nn.functional.cross_entropy(out[:, : len(NAMES) + 1], colours)
    shape = torch.nn.functional.cross_entropy(out[:, len(NAMES) + 1:], shapes, ignore_index=-100)
    return colour, shape


def vision_only(model, processor, head, opt, args, grid) -> None:
    start = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 30)
        batch = [scene(3) for _ in range(args.batch)]
        inputs = processor.image_processor(images=[b[0] for b in batch], return_tensors="pt")
        out = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        features = out if torch.is_tensor(out) else out.pooler_output
        colour, shape = dense_loss(head, features, batch, grid)
        opt.zero_grad()
        (colour + shape).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"{step:5d} colour {colour.item():.3f} shape {shape.item():.3f} {time.time() - start:.0f}s", flush=True)
    model.save_pretrained(args.vision_only)
    processor.save_pretrained(args.vision_only)
    torch.save(head.state_dict(), f"{args.vision_only}/head.pt")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("task", choices=["colour1", "exist3", "bind3"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--aux", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-first", action="store_true")
    ap.add_argument("--vision-only", metavar="OUT")
    args = ap.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    processor = AutoProcessor.from_pretrained(args.model)
    tok = processor.tokenizer
    model = Qwen2VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    features = {}
    model.model.visual.merger.register_forward_hook(lambda _m, _i, out: features.__setitem__("v", out))
    head = torch.nn.Linear(model.config.vision_config.hidden_size, len(NAMES) + 1 + len(SHAPES))
    if os.path.exists(f"{args.model}/head.pt"):
        head.load_state_dict(torch.load(f"{args.model}/head.pt"))
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=args.lr,
                            betas=(0.9, 0.95), weight_decay=0.1)
    grid = SIDE // CELL
    if args.vision_only:
        return vision_only(model, processor, head, opt, args, grid)
    start = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 30)
        batch = [example(args.task) for _ in range(args.batch)]
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": q}, {"type": "image"}][:: 1 if args.text_first else -1]}],
            add_generation_prompt=True) for _, _, q, _ in batch]
        inputs = processor(images=[b[0] for b in batch], text=texts, return_tensors="pt", padding=True)
        target = torch.tensor([tok.encode(b[3])[0] for b in batch])
        logits = model(**inputs).logits
        last = inputs["attention_mask"].sum(1) - 1
        logits = logits[torch.arange(len(batch)), last]
        answer_loss = torch.nn.functional.cross_entropy(logits, target)
        loss = answer_loss
        aux = torch.tensor(0.0)
        if args.aux > 0:
            colour, shape = dense_loss(head, features["v"], batch, grid)
            aux = colour + shape
            loss = loss + args.aux * aux
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0 or step == args.steps - 1:
            acc = (logits.argmax(-1) == target).float().mean().item()
            norm = features["v"].norm(dim=-1).mean().item()
            print(f"{step:5d} loss {answer_loss.item():.3f} acc {acc:.2f} aux {aux.item():.3f} "
                  f"feature-norm {norm:.1f} {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
