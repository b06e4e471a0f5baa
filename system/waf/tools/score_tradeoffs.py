#!/usr/bin/env python3
"""What changing rule scores would trade on the corpus: false positives removed against attacks
no longer blocked (docs/waf.md, "Why the 1% target is not met").

    cargo run --release -p pay-waf --example explain -- --all > /tmp/verdicts.jsonl
    python3 system/waf/tools/score_tradeoffs.py /tmp/verdicts.jsonl [--floor 0.90] [--threshold N]

Reads the verdicts `explain --all` prints (each match's rule id and score) and the corpus cases,
then prints
  * for each rule that fires on a blocked benign case, what lowering it to 4 (no block alone)
    or 0 (audit only) would remove and cost, one rule at a time;
  * a greedy sequence of such changes, each the one removing the most false positives per
    detection lost, for as long as detection stays at or above --floor.
It re-scores the recorded matches only: a developer's estimate for tuning, fitted to the corpus
that also measures the engine, never a configuration to ship as it is.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "tests", "corpus")
CONFIG = os.path.join(HERE, "..", "config", "waf.yaml")


def shipped_threshold():
    """The blocking threshold of the shipped configuration, which `explain` uses by default."""
    with open(CONFIG, encoding="utf-8") as f:
        m = re.search(r"^threshold:\s*(\d+)\s*(#.*)?$", f.read(), re.MULTILINE)
    if not m:
        sys.exit("no top-level `threshold:` in %s: give --threshold" % CONFIG)
    return int(m.group(1))


def load_cases():
    cases = {}
    for name in ("crs-cases.jsonl", "payment-api-benign.jsonl"):
        with open(os.path.join(CORPUS, name), encoding="utf-8") as f:
            for line in f:
                case = json.loads(line)
                cases[case["id"]] = case
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verdicts", help="output of `explain --all`")
    ap.add_argument("--floor", type=float, default=0.90, help="lowest detection rate the greedy search keeps")
    ap.add_argument("--threshold", type=int, help="blocking threshold (default: the shipped configuration's)")
    args = ap.parse_args()
    threshold = args.threshold if args.threshold is not None else shipped_threshold()

    cases = load_cases()
    attacks, benign = [], []
    with open(args.verdicts, encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            if "scores" not in v:
                sys.exit("the verdicts carry no per-match scores: rebuild the explain example")
            case = cases[v["id"]]
            matches = list(zip(v["ids"], v["scores"]))
            if case["kind"] == "attack" and case["paranoia"] <= 2:
                attacks.append(matches)
            elif case["kind"] == "benign":
                benign.append(matches)

    def blocked(matches, scores):
        return sum(scores.get(rule, score) for rule, score in matches) >= threshold

    def evaluate(scores):
        detected = sum(1 for m in attacks if blocked(m, scores))
        false_positives = sum(1 for m in benign if blocked(m, scores))
        return detected, false_positives

    def line(detected, fps):
        return "detection %d/%d (%.1f%%), false positives %d/%d (%.2f%%)" % (
            detected, len(attacks), 100.0 * detected / len(attacks), fps, len(benign), 100.0 * fps / len(benign))

    base = evaluate({})
    print("now: " + line(*base))
    print("\none rule at a time (rules that fire on a blocked benign case):")
    firing = sorted({rule for m in benign if blocked(m, {}) for rule, _ in m})
    rows = []
    for rule in firing:
        for score in (4, 0):
            detected, fps = evaluate({rule: score})
            rows.append((base[1] - fps, base[0] - detected, rule, score))
    for saved, lost, rule, score in sorted(rows, key=lambda r: (-r[0], r[1])):
        if saved > 0:
            print("  %d -> %d: %d false positives fewer, %d attacks no longer blocked" % (rule, score, saved, lost))

    print("\ngreedy, detection kept at or above %.0f%%:" % (100 * args.floor))
    every_rule = sorted({rule for m in attacks + benign for rule, _ in m})
    chosen, current = {}, base
    while True:
        best = None
        for rule in every_rule:
            for score in (4, 0):
                if rule in chosen and chosen[rule] <= score:
                    continue
                trial = dict(chosen)
                trial[rule] = score
                detected, fps = evaluate(trial)
                saved, lost = current[1] - fps, current[0] - detected
                if saved <= 0 or detected < args.floor * len(attacks):
                    continue
                merit = saved / (lost + 0.5)
                if best is None or merit > best[0]:
                    best = (merit, rule, score, (detected, fps))
        if best is None:
            break
        _, rule, score, current = best
        chosen[rule] = score
        print("  %d -> %d: %s" % (rule, score, line(*current)))


if __name__ == "__main__":
    main()
