"""Payment flows through the official `stripe` Python SDK, unchanged, against paymentd.

Run by the integration test `stripe_sdk` with PAY_API_BASE, PAY_SECRET_KEY and a CA bundle
for paymentd's TLS certificate (REQUESTS_CA_BUNDLE). Prints one JSON line per check and exits
non-zero on the first failure.
"""

import json
import os
import sys

import stripe

stripe.api_key = os.environ["PAY_SECRET_KEY"]
stripe.api_base = os.environ["PAY_API_BASE"]
stripe.max_network_retries = 2
if os.environ.get("PAY_CA_BUNDLE"):
    # paymentd's test certificate is issued by a test CA; the SDK verifies against this bundle.
    stripe.ca_bundle_path = os.environ["PAY_CA_BUNDLE"]

results = []


def check(name, cond, detail=""):
    results.append({"check": name, "ok": bool(cond), "detail": str(detail)})
    print(json.dumps(results[-1]), flush=True)
    if not cond:
        sys.exit(1)


def card(number, cvc="123"):
    return stripe.PaymentMethod.create(
        type="card",
        card={"number": number, "exp_month": 12, "exp_year": 2034, "cvc": cvc},
        billing_details={"name": "Zoë O'Brien-Łukasiewicz", "email": "zoe@example.com"},
        metadata={"note": "first order; <b>gift</b> & \"fragile\" -- thanks"},
    )


pm = card("4242424242424242")
check("payment method created", pm.id.startswith("pm_") and pm.card.last4 == "4242" and pm.card.brand == "visa", pm.id)
check("card number never returned", "4242424242424242" not in json.dumps(pm.to_dict(), default=str))

# Merchants' free text holds English words that are also shell commands and function names; the
# WAF once blocked a line starting "Find", "real-time", "Trim (gold)" and "File (PDF)". A
# mandate's user agent carries a locale token that is a PowerShell alias (`; sl;`).
notes = "Trim (gold) x2, real-time tracking\nFind the blue house; leave at the door"
pi = stripe.PaymentIntent.create(
    amount=2000, currency="usd", payment_method=pm.id, confirm=True, description=notes,
    metadata={"order_id": "A-1001", "gift": "Sed ut perspiciatis", "invoice": "File (PDF) by e-mail"},
    mandate_data={"customer_acceptance": {"type": "online", "online": {
        "ip_address": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (Windows; U; Windows NT 6.1; sl; rv:1.9.2.3) Gecko/20100401 Firefox/3.6.3"}}},
)
check("automatic capture succeeds", pi.status == "succeeded" and pi.amount_received == 2000, pi.status)
check("free text kept as sent", pi.description == notes and pi.metadata["invoice"] == "File (PDF) by e-mail", pi.description)
check("latest charge captured", stripe.Charge.retrieve(pi.latest_charge).captured is True)

# Redirect-based integrations confirm with a return URL on the merchant's site; the WAF in front
# of the API must let it through (it once read it as remote file inclusion and answered 403).
later = stripe.PaymentIntent.create(amount=2500, currency="usd", payment_method=pm.id)
returned = stripe.PaymentIntent.confirm(later.id, return_url="https://shop.example.com/checkout/complete?order=A-1002")
check("confirm with a return URL", returned.status == "succeeded", returned.status)
local = stripe.PaymentIntent.create(amount=2600, currency="usd", payment_method=pm.id, confirm=True, return_url="http://localhost:4242/success")
check("create and confirm with a localhost return URL", local.status == "succeeded", local.status)

manual = stripe.PaymentIntent.create(amount=5000, currency="usd", payment_method=card("5555555555554444").id, confirm=True, capture_method="manual")
check("manual capture authorizes", manual.status == "requires_capture" and manual.amount_capturable == 5000, manual.status)
captured = stripe.PaymentIntent.capture(manual.id, amount_to_capture=3000)
check("partial capture", captured.status == "succeeded" and captured.amount_received == 3000, captured.amount_received)

to_cancel = stripe.PaymentIntent.create(amount=1500, currency="usd", payment_method=pm.id, confirm=True, capture_method="manual")
canceled = stripe.PaymentIntent.cancel(to_cancel.id, cancellation_reason="requested_by_customer")
check("cancel releases the authorization", canceled.status == "canceled", canceled.status)

declining = card("4000000000000002")
try:
    stripe.PaymentIntent.create(amount=1000, currency="usd", payment_method=declining.id, confirm=True)
    check("decline raises CardError", False, "no exception")
except stripe.CardError as e:
    check("decline raises CardError", e.code == "card_declined" and e.error.decline_code == "generic_decline", (e.code, e.error.decline_code))
    failed = stripe.PaymentIntent.retrieve(e.error.payment_intent.id)
    check("declined intent needs a new payment method", failed.status == "requires_payment_method" and failed.last_payment_error.decline_code == "generic_decline", failed.status)

refund = stripe.Refund.create(payment_intent=pi.id, amount=500)
check("partial refund succeeds", refund.status == "succeeded" and refund.amount == 500, refund.status)
refund2 = stripe.Refund.create(payment_intent=pi.id)
check("refund of the rest", refund2.amount == 1500, refund2.amount)
try:
    stripe.Refund.create(payment_intent=pi.id, amount=1)
    check("no refund beyond the captured amount", False, "no exception")
except stripe.InvalidRequestError as e:
    check("no refund beyond the captured amount", e.code == "charge_already_refunded", e.code)

created = [stripe.PaymentIntent.create(amount=100 + i, currency="usd").id for i in range(26)]
seen = [p.id for p in stripe.PaymentIntent.list(limit=10).auto_paging_iter()]
check("auto-pagination over more than 25 intents", all(c in seen for c in created) and len(seen) == len(set(seen)), len(seen))
check("newest first", seen.index(created[-1]) < seen.index(created[0]))

first = stripe.PaymentIntent.create(amount=777, currency="usd", payment_method=pm.id, confirm=True, idempotency_key="sdk-flow-key-1")
again = stripe.PaymentIntent.create(amount=777, currency="usd", payment_method=pm.id, confirm=True, idempotency_key="sdk-flow-key-1")
check("idempotent retry returns the same object", first.id == again.id and again.status == "succeeded", (first.id, again.id))
try:
    stripe.PaymentIntent.create(amount=778, currency="usd", idempotency_key="sdk-flow-key-1")
    check("key reuse with other parameters is refused", False, "no exception")
except stripe.IdempotencyError:
    check("key reuse with other parameters is refused", True)

customer = stripe.Customer.create(email="buyer@example.com", name="Ünïcode Bûyer")
attached = stripe.PaymentMethod.attach(card("4242424242424242").id, customer=customer.id)
check("attach to a customer", attached.customer == customer.id)
listed = stripe.PaymentMethod.list(customer=customer.id, type="card")
check("list a customer's cards", len(listed.data) == 1)
for_customer = stripe.PaymentIntent.create(amount=1200, currency="usd", customer=customer.id, payment_method=attached.id, confirm=True)
check("charge a saved card", for_customer.status == "succeeded")
events = stripe.Event.list(type="payment_intent.succeeded", limit=3)
check("events are listed", len(events.data) == 3 and all(e.type == "payment_intent.succeeded" for e in events.data))

print(json.dumps({"summary": "all checks passed", "checks": len(results)}))
