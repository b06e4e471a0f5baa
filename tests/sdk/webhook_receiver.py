"""A merchant's webhook receiver that verifies every delivery with the official libraries:
`stripe.Webhook.construct_event` (Stripe-Signature) and `standardwebhooks` (webhook-id,
webhook-timestamp, webhook-signature).

Run by the integration test `webhooks_sdk`. Usage: webhook_receiver.py SECRET_FILE LOG_FILE.
Prints `port <n>` once listening on 127.0.0.1. The signing secret is read from SECRET_FILE on
every request (the test writes it after creating the endpoint); each request is appended to
LOG_FILE as one JSON line: the event id and type, whether each library accepted it, the status
answered, and the raw headers and body (so the test can replay a tampered copy).
Answers 200 when both libraries accept the delivery, 400 otherwise. Deduplicates by event id,
as a merchant should: `applied` is true only the first time an event is accepted.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe
from standardwebhooks.webhooks import Webhook

SECRET_FILE, LOG_FILE = sys.argv[1], sys.argv[2]
lock = threading.Lock()
applied_ids = set()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        try:
            with open(SECRET_FILE) as f:
                secret = f.read().strip()
        except OSError:
            secret = ""
        stripe_ok, standard_ok, event = False, False, None
        try:
            event = stripe.Webhook.construct_event(body, self.headers.get("Stripe-Signature"), secret)
            stripe_ok = True
        except Exception:
            pass
        try:
            headers = {k.lower(): v for k, v in self.headers.items()}
            Webhook(secret).verify(body, headers)
            standard_ok = True
        except Exception:
            pass
        ok = stripe_ok and standard_ok and bool(secret)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        with lock:
            applied = ok and parsed.get("id") not in applied_ids
            if applied:
                applied_ids.add(parsed.get("id"))
            record = {
                "id": parsed.get("id"),
                "type": parsed.get("type"),
                "stripe_ok": stripe_ok,
                "standard_ok": standard_ok,
                "status": 200 if ok else 400,
                "applied": applied,
                "sdk_event_type": event["type"] if event is not None else None,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            with open(LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
