#!/usr/bin/env python3
"""Seconds per training step of one or more `ocular` binaries, warm-up and question steps apart,
on a shortened copy of a training config, run one after another on this machine.

    scripts/bench_train.py [--config configs/builtin.toml] [--steps 60] BASELINE [CANDIDATE ...]

Each binary trains `--steps` dense warm-up steps then `--steps` question steps from scratch in a
scratch folder; the first 10 steps of each stage are not timed (allocation, first evaluation).
Prints each binary's seconds per step and its ratio to the first binary's. Run it on an idle
machine: training uses every core.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP = re.compile(rb"step (\d+)/(\d+)")


def shortened(config: str, steps: int) -> str:
    """The config with `steps` warm-up and question steps and no evaluation or checkpoints."""
    out, section = [], ""
    for line in config.splitlines():
        if line.startswith("["):
            section = line.strip()
        key = line.split("=")[0].strip()
        if section == "[dense]" and key == "warmup_steps":
            line = f"warmup_steps = {steps}"
        elif section == "[dense]" and key == "decay_steps":
            line = f"decay_steps = {steps // 2}"
        elif section == "[optim]" and key == "steps":
            line = f"steps = {steps}"
        elif section == "[optim]" and key in ("eval_every", "checkpoint_every"):
            line = f"{key} = 0"
        out.append(line)
    return "\n".join(out) + "\n"


def step_times(binary: str, config: Path, out: Path) -> dict:
    """When (seconds from start) each progress line's step was reported."""
    proc = subprocess.Popen([binary, "train", "--config", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    start, seen, buf = time.time(), {}, b""
    while chunk := proc.stdout.read1(4096):
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]", buf)
        for line in lines:
            if m := STEP.match(line):
                seen.setdefault(int(m.group(1)), time.time() - start)
    if proc.wait() != 0:
        sys.exit(f"{binary} failed: {buf.decode(errors='replace')}")
    return seen


def pace(seen: dict, first: int, last: int) -> float:
    """Seconds per step between the reports nearest `first` and `last`."""
    a = min((s for s in seen if s >= first), default=None)
    b = max((s for s in seen if s <= last), default=None)
    if a is None or b is None or b <= a:
        sys.exit(f"too few progress reports between steps {first} and {last}: raise --steps")
    return (seen[b] - seen[a]) / (b - a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/builtin.toml")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("binaries", nargs="+")
    args = p.parse_args()
    n = args.steps
    if n < 20:
        sys.exit(f"--steps {n}: at least 20, so that each stage has timed steps after its first 10")
    for binary in args.binaries:
        if not shutil.which(binary):
            sys.exit(f"{binary}: not an executable (give the path of an `ocular` binary)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(shortened(Path(args.config).read_text(), n))
        results = []
        for i, binary in enumerate(args.binaries):
            seen = step_times(binary, config, Path(tmp) / f"out{i}")
            results.append((binary, pace(seen, 10, n), pace(seen, n + 10, 2 * n)))
    base = results[0]
    print(f"{'binary':40} {'warm-up s/step':>15} {'question s/step':>16}")
    for binary, warm, question in results:
        print(f"{binary:40} {warm:9.3f} ({warm / base[1]:.2f}x) {question:9.3f} ({question / base[2]:.2f}x)")


if __name__ == "__main__":
    main()
