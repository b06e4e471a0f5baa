#!/usr/bin/env python3
"""Synthetic payment-API traffic for the WAF's real-traffic false-positive test.

    python3 -m venv /tmp/faker && /tmp/faker/bin/pip install faker==40.63.0
    /tmp/faker/bin/python system/waf/tools/gen_traffic.py 3000 1 \
        > system/waf/tests/traffic/synthetic-api.jsonl

Writes N requests (seeded, so the same N and seed give the same file with the same Faker) in
the corpus's JSON-lines form: the requests the Stripe SDKs send to the endpoints this API serves
(customers, payment methods with test card numbers, PaymentIntents created, updated, confirmed
and cancelled, refunds, lists, webhook endpoints), filled with Faker's names, addresses,
companies, phone numbers, e-mail addresses, URLs, IP addresses, browser user agents and prose in
30 locales, and the free text merchants put in descriptions and metadata: order notes over
several lines, product variants in parentheses, gift messages, JSON carts, tracking numbers.

`tests/corpus.rs` (`synthetic_api_traffic_is_never_blocked`) sends every request through the
shipped configuration and fails on any block. The file is generated once and committed: the
test does not need Python or Faker, and a new Faker release cannot change what it checks.
"""

import json
import os
import random
import sys
import urllib.parse

from faker import Faker

LOCALES = ["en_US", "en_GB", "en_IE", "fr_FR", "de_DE", "es_ES", "it_IT", "pt_BR", "nl_NL", "pl_PL",
           "ja_JP", "zh_CN", "ko_KR", "ru_RU", "ar_AA", "he_IL", "hi_IN", "tr_TR", "sv_SE", "el_GR",
           "cs_CZ", "da_DK", "fi_FI", "hu_HU", "uk_UA", "vi_VN", "th_TH", "id_ID", "fr_CA", "en_AU"]
# Stripe's test card numbers: the only card numbers a file in the repository may hold.
CARDS = ["4242424242424242", "4000056655665556", "5555555555554444", "378282246310005", "6011111111111117",
         "4000000000000002", "4000002500003155"]
VARIANTS = ["gold", "silver", "oak", "XL", "Mon-Fri", "v2", "USB-C", "PDF", "2 pack", "approx.", "red/blue", "A4"]


class Traffic:
    """One seeded stream of requests."""

    def __init__(self, seed):
        self.rnd = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(LOCALES):
            f = Faker(loc)
            f.seed_instance(seed + i)
            self.fakers[loc] = f
        self.en = self.fakers["en_US"]

    def token(self, prefix):
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return prefix + "_" + "".join(self.rnd.choice(alphabet) for _ in range(24))

    @staticmethod
    def provided(f, name):
        """Faker's `name` for this locale, or None where the locale has no such provider."""
        try:
            return getattr(f, name)()
        except AttributeError:
            return None

    def address(self, f, prefix):
        rnd = self.rnd
        fields = {
            "line1": self.provided(f, "street_address"),
            "line2": rnd.choice([None, self.provided(f, "secondary_address"), f"Apt {rnd.randint(1, 99)}"]),
            "city": self.provided(f, "city"),
            "state": self.provided(f, "state") or self.provided(f, "administrative_unit"),
            "postal_code": self.provided(f, "postcode"),
            "country": self.provided(f, "current_country_code") or "US",
        }
        return [(f"{prefix}[{k}]", v) for k, v in fields.items() if v]

    def free_text(self, f):
        """A description or note as merchants write them."""
        rnd, en = self.rnd, self.en
        kind = rnd.randrange(14)
        if kind == 0:
            return f.sentence()
        if kind == 1:
            return f.paragraph()
        if kind == 2:
            return en.catch_phrase()
        if kind == 3:
            return en.bs()
        if kind == 4:
            return f"Order #{rnd.randint(1000, 99999)} - {rnd.randint(1, 5)}x {en.word().title()} {en.word()}"
        if kind == 5:
            return f"{f.company()} - invoice {rnd.randint(1, 9999)}/{rnd.randint(2020, 2026)}"
        if kind == 6:
            return en.text(max_nb_chars=200)
        if kind == 7:
            return f"Subscription: {en.word()} plan (monthly) for {f.name()}"
        if kind == 8:
            return f.text(max_nb_chars=120)
        if kind == 9:
            return f"Gift for {f.first_name()}: \"{en.catch_phrase()}\" & a card"
        if kind == 10:
            return f"{en.word().title()} ({rnd.choice(VARIANTS)}) x{rnd.randint(1, 9)}"
        if kind == 11:
            size = rnd.choice(["S", "M", "L", "XL"])
            return f"{en.word().title()} {en.word()} ({size}) x{rnd.randint(1, 9)} @ ${rnd.randint(1, 200)}.{rnd.randint(0, 99):02d}"
        if kind == 12:
            return "\n".join(f.sentence() for _ in range(rnd.randint(2, 5)))
        return f"{en.word().title()} {en.word()}, {en.word()} ({en.word()})"

    def metadata(self, f):
        rnd, en = self.rnd, self.en
        pool = [
            ("order_id", lambda: str(rnd.randint(10000, 9999999))),
            ("order_number", lambda: f"#{rnd.randint(1000, 99999)}"),
            ("customer_name", f.name),
            ("note", lambda: self.free_text(f)),
            ("notes", f.sentence),
            ("cart_url", lambda: f"{en.url()}cart/{rnd.randint(1, 999)}"),
            ("order_url", lambda: f"{en.url()}orders/{rnd.randint(1, 99999)}?ref=email"),
            ("ip", en.ipv4_public),
            ("ip_address", lambda: en.ipv6() if rnd.random() < 0.3 else en.ipv4_public()),
            ("user_agent", en.user_agent),
            ("email", f.email),
            ("phone", f.phone_number),
            ("sku", lambda: f"{en.lexify('???').upper()}-{rnd.randint(100, 9999)}"),
            ("product", en.catch_phrase),
            ("company", f.company),
            ("cart", lambda: json.dumps({"items": [{"sku": en.lexify("??-###"), "qty": rnd.randint(1, 5),
                                                   "name": en.catch_phrase()}]})),
            ("coupon", lambda: en.lexify("????##").upper()),
            ("utm_source", lambda: rnd.choice(["google", "facebook", "newsletter", "t.co", "instagram"])),
            ("utm_campaign", en.slug),
            ("referrer", en.uri),
            ("file", lambda: en.file_path(depth=rnd.randint(1, 3))),
            ("filename", en.file_name),
            ("date", lambda: f"{rnd.randint(2020, 2026)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
                             f"T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z"),
            ("delivery_window", lambda: f"{rnd.randint(8, 11)}:00-{rnd.randint(12, 18)}:00"),
            ("address", lambda: f.address().replace("\n", ", ")),
            ("gift_message", lambda: f"{f.sentence()} {rnd.choice(['<3', ':)', 'xx', '!!', ';-)', '-- M.'])}"),
            ("locale", lambda: rnd.choice(LOCALES)),
            ("uuid", en.uuid4),
            ("tracking", lambda: en.bothify("1Z###??#########").upper()),
            ("mac", en.mac_address),
            ("hostname", en.hostname),
            ("color", lambda: f"{en.color_name()} {en.hex_color()}"),
        ]
        return [(f"metadata[{k}]", v) for k, gen in rnd.sample(pool, rnd.randint(1, 6)) if (v := gen())]

    def case(self, i, method, path, params, desc):
        headers = {"Host": "api.example.test", "User-Agent": "Stripe/v1 PythonBindings/16.1.0",
                   "Stripe-Version": "2026-06-24.dahlia"}
        body, uri = "", path
        if method == "POST":
            body = urllib.parse.urlencode(params)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif params:
            uri = f"{path}?{urllib.parse.urlencode(params)}"
        return {"id": f"traffic-{i}", "family": "payment-api", "kind": "benign", "paranoia": 1, "desc": desc,
                "method": method, "uri": uri, "headers": headers, "body": body}

    def request(self, i):
        rnd, en = self.rnd, self.en
        loc = rnd.choice(LOCALES)
        f = self.fakers[loc]
        kind = rnd.randrange(10)
        if kind == 0:
            p = [("name", f.name()), ("email", f.email()), ("phone", f.phone_number()),
                 ("description", self.free_text(f))]
            p += self.address(f, "address")
            if rnd.random() < 0.5:
                p += [("shipping[name]", f.name())] + self.address(f, "shipping[address]")
            return self.case(i, "POST", "/v1/customers", p + self.metadata(f), f"customer {loc}")
        if kind in (1, 2):
            p = [("amount", str(rnd.randint(50, 999999))),
                 ("currency", rnd.choice(["usd", "eur", "gbp", "jpy", "pln"])),
                 ("description", self.free_text(f))]
            if rnd.random() < 0.5:
                p += [("receipt_email", f.email())]
            if rnd.random() < 0.5:
                p += [("shipping[name]", f.name()), ("shipping[phone]", f.phone_number())]
                p += self.address(f, "shipping[address]")
            if rnd.random() < 0.4:
                p += [("statement_descriptor_suffix", f"{en.lexify('????').upper()} {rnd.randint(1, 999)}")]
            if rnd.random() < 0.4:
                back = rnd.choice(["checkout/complete", f"thanks?order={rnd.randint(1, 9999)}"])
                p += [("payment_method", self.token("pm")), ("confirm", "true"), ("return_url", en.url() + back)]
            if rnd.random() < 0.3:
                p += [("capture_method", "manual")]
            return self.case(i, "POST", "/v1/payment_intents", p + self.metadata(f), f"payment intent {loc}")
        if kind == 3:
            p = [("description", self.free_text(f))] + self.metadata(f)
            return self.case(i, "POST", f"/v1/payment_intents/{self.token('pi')}", p, f"update {loc}")
        if kind == 4:
            p = [("payment_method", self.token("pm")), ("return_url", en.url() + "return")]
            if rnd.random() < 0.5:
                p += [("mandate_data[customer_acceptance][type]", "online"),
                      ("mandate_data[customer_acceptance][online][ip_address]", en.ipv4_public()),
                      ("mandate_data[customer_acceptance][online][user_agent]", en.user_agent())]
            return self.case(i, "POST", f"/v1/payment_intents/{self.token('pi')}/confirm", p, f"confirm {loc}")
        if kind == 5:
            p = [("type", "card"), ("card[number]", rnd.choice(CARDS)), ("card[exp_month]", str(rnd.randint(1, 12))),
                 ("card[exp_year]", str(rnd.randint(2027, 2034))), ("card[cvc]", str(rnd.randint(100, 9999))),
                 ("billing_details[name]", f.name()), ("billing_details[email]", f.email()),
                 ("billing_details[phone]", f.phone_number())]
            p += self.address(f, "billing_details[address]")
            if rnd.random() < 0.5:
                p += self.metadata(f)
            return self.case(i, "POST", "/v1/payment_methods", p, f"payment method {loc}")
        if kind == 6:
            p = [("payment_intent", self.token("pi")),
                 ("reason", rnd.choice(["requested_by_customer", "duplicate", "fraudulent"]))]
            if rnd.random() < 0.5:
                p += [("amount", str(rnd.randint(1, 9999)))]
            return self.case(i, "POST", "/v1/refunds", p + self.metadata(f), f"refund {loc}")
        if kind == 7:
            p = [("limit", str(rnd.randint(1, 100)))]
            if rnd.random() < 0.5:
                p += [("customer", self.token("cus"))]
            if rnd.random() < 0.5:
                p += [("created[gte]", str(rnd.randint(1600000000, 1800000000)))]
            if rnd.random() < 0.3:
                p += [("starting_after", self.token("pi"))]
            if rnd.random() < 0.3:
                p += [("expand[]", "data.customer")]
            path = rnd.choice(["/v1/payment_intents", "/v1/charges", "/v1/refunds", "/v1/customers", "/v1/events"])
            if path == "/v1/customers" and rnd.random() < 0.5:
                p += [("email", f.email())]
            return self.case(i, "GET", path, p, f"list {loc}")
        if kind == 8:
            p = [("url", en.url() + rnd.choice(["webhooks/stripe", "api/stripe/events", "hooks"])),
                 ("description", self.free_text(f))]
            events = ["payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded",
                      "charge.succeeded", "customer.created"]
            p += [("enabled_events[]", e) for e in rnd.sample(events, 2)]
            return self.case(i, "POST", "/v1/webhook_endpoints", p + self.metadata(f), f"webhook endpoint {loc}")
        reason = rnd.choice(["requested_by_customer", "abandoned", "duplicate"])
        return self.case(i, "POST", f"/v1/payment_intents/{self.token('pi')}/cancel",
                         [("cancellation_reason", reason)], f"cancel {loc}")


def main():
    # Some locales pick from sets, whose order follows Python's string hashing: fix its seed.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    traffic = Traffic(seed)
    for i in range(1, n + 1):
        print(json.dumps(traffic.request(i), ensure_ascii=False))


if __name__ == "__main__":
    main()
