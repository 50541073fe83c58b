#!/usr/bin/env python3
"""Accuracy of an `ocular eval --predictions FILE` run by kind of question, from the question's
wording: which attribute or count is asked, which relation, and what the yes/no and video answers
lean to. Standard library only.  Usage: scripts/experiments/breakdown.py FILE [FILE ...]"""
import collections
import json
import re
import sys

SHAPES = "circle|square|triangle|star|diamond"
COLOURS = "red|green|blue|yellow|purple|orange|cyan"


def kind(p):
    q, task, expected = p["question"].lower(), p["task"], p["expected"]
    if task == "attribute":
        if expected in ("yes", "no"):
            return "attribute: yes/no"
        if re.search(r"\b(big|size|large|small)\b", q):
            return "attribute: size"
        if re.search(r"colou?r", q):
            return "attribute: colour of a shape"
        return "attribute: shape of a colour"
    if task == "count":
        if re.search(rf"\b({SHAPES})(e?s)?\b", q):
            return "count: by shape"
        if re.search(rf"\b({COLOURS})\b", q):
            return "count: by colour"
        return "count: all"
    if task == "relation":
        for word, name in [("left", "left of"), ("right", "right of"), ("above", "above"), ("higher", "above"),
                           ("below", "below"), ("beneath", "below"), ("under", "below"), ("lower", "below"),
                           ("close", "nearest"), ("near", "nearest"), ("far", "farthest"), ("furth", "farthest"),
                           ("distant", "farthest")]:
            if word in q:
                return f"relation: {name}"
        return "relation: other"
    return task


def main(files):
    for path in files:
        rows = [json.loads(line) for line in open(path)]
        by = collections.defaultdict(list)
        for p in rows:
            by[kind(p)].append(p)
        print(f"== {path}: {len(rows)} answers")
        for name in sorted(by):
            ps = by[name]
            acc = sum(p["correct"] for p in ps) / len(ps)
            line = f"{name:32} n {len(ps):4}  accuracy {acc:6.1%}"
            if name in ("attribute: yes/no", "video"):
                said = collections.Counter(p["answer"] for p in ps).most_common(4)
                line += "  answers " + ", ".join(f"{a} {n}" for a, n in said)
            if name == "grounding":
                ious = [p.get("iou", 0.0) for p in ps]
                line += f"  mean IoU {sum(ious) / len(ious):.3f}, IoU >= 0.3: {sum(i >= 0.3 for i in ious)}"
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
