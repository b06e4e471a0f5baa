#!/usr/bin/env python3
"""Replays the WAF corpus against ModSecurity running the same Core Rule Set, as an oracle for
the engine's rule semantics (which rule ids fire on which case) and for what real CRS blocks.

Usage: modsec_replay.py <corpus dir> <apache error log> <out.jsonl> [port]

Sends each case exactly as tests/corpus.rs builds it (Content-Length, and a form Content-Type
when a body has none, as go-ftw does) to ModSecurity in DetectionOnly mode on 127.0.0.1, then
reads the rule ids and the inbound blocking score that the error log gained. Setup (Debian):
apt-get install apache2 libapache2-mod-security2; an httpd.conf that loads mod_security2 with
SecRuleEngine DetectionOnly, SecRequestBodyAccess On, the JSON/XML body processor rules of
modsecurity.conf-recommended, crs-setup.conf with tx.blocking_paranoia_level=2, and the rules/
directory of the CRS checkout that rules/crs.json was converted from (docs/waf.md).
"""
import json, os, re, socket, sys, time


def send(port, raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(raw)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except OSError:
        pass
    s.close()
    return data


def main():
    corpus, log, out_path = sys.argv[1:4]
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 8999
    out = open(out_path, "w")
    pos = os.path.getsize(log)
    for name in ("crs-cases.jsonl", "payment-api-benign.jsonl"):
        for line in open(os.path.join(corpus, name)):
            c = json.loads(line)
            body = (c.get("body") or "").encode()
            headers = list((c.get("headers") or {}).items())
            has = lambda n: any(k.lower() == n for k, _ in headers)
            method = c["method"]
            if (body or method in ("POST", "PUT", "PATCH")) and not has("content-length") and not has("transfer-encoding"):
                headers.append(("Content-Length", str(len(body))))
            if body and not has("content-type"):
                headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            # One request per connection (a case's own Connection header is replaced).
            headers = [(k, v) for k, v in headers if k.lower() != "connection"] + [("Connection", "close")]
            raw = ("%s %s %s\r\n" % (method, c["uri"], c.get("version") or "HTTP/1.1")).encode("utf-8", "surrogateescape")
            for k, v in headers:
                v = v if isinstance(v, str) else json.dumps(v)
                raw += ("%s: %s\r\n" % (k, v)).encode("utf-8", "surrogateescape")
            raw += b"\r\n" + body
            resp = send(port, raw)
            time.sleep(0.002)
            with open(log, "rb") as f:
                f.seek(pos)
                new = f.read().decode("latin1")
                pos = f.tell()
            ids = [int(x) for x in re.findall(r'\[id "(\d+)"\]', new)]
            m = re.search(r"Inbound Scores: blocking=(\d+)", new)
            rec = dict(
                id=c["id"], kind=c["kind"], family=c["family"], paranoia=c.get("paranoia"),
                status=resp[9:12].decode("latin1") if resp else "",
                ids=[i for i in ids if i not in (949110, 980170)],
                blocking=int(m.group(1)) if m else 0,
            )
            out.write(json.dumps(rec) + "\n")


main()
