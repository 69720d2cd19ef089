"""A stand-in for Stripe over real HTTP on 127.0.0.1: it answers the Checkout Session calls
the `stripe` package makes (point `stripe.api_base` at it), serves a checkout page for each
session, and when the page's Pay button is pressed posts the signed
`checkout.session.completed` to the webhook URL it was given, then sends the browser back to
the session's success URL, as Stripe does. Events are signed with Stripe's scheme:
`Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload" under the secret>`."""
import hashlib
import hmac
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import requests

WEBHOOK_SECRET = "whsec_test_serva_0123456789"
SECRET_KEY = "sk_test_serva_0123456789"


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, stamp: int | None = None) -> str:
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


_event_numbers = itertools.count(1)


def event(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps({"id": event_id or f"evt_test_{next(_event_numbers)}", "object": "event",
                       "type": event_type, "api_version": "2024-06-20", "created": int(time.time()),
                       "livemode": False, "data": {"object": obj}}).encode()


def form_to_nested(pairs) -> dict:
    """Stripe's form encoding (line_items[0][price_data][currency]=usd) back to a dict."""
    out = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class FakeStripe:
    def __init__(self, webhook_url=None, secret=WEBHOOK_SECRET):
        self.webhook_url = webhook_url
        self.webhook_delay = 0.0
        self.secret = secret
        self.sessions = {}  # id -> session dict
        self.by_idempotency_key = {}
        self.requests = []  # (method, path, headers)
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)

    # ------------------------------------------------------------ the API
    def create_session(self, params, idempotency_key):
        with self.lock:
            if idempotency_key in self.by_idempotency_key:
                return self.by_idempotency_key[idempotency_key]
            number = next(self.numbers)
            item = params["line_items"]["0"]
            session_id = f"cs_test_{number}"
            session = {
                "id": session_id, "object": "checkout.session", "mode": params["mode"],
                "amount_total": int(item["price_data"]["unit_amount"]) * int(item["quantity"]),
                "currency": item["price_data"]["currency"], "metadata": params.get("metadata", {}),
                "client_reference_id": params.get("client_reference_id"),
                "customer_email": params.get("customer_email"),
                "payment_status": "unpaid", "status": "open", "payment_intent": None,
                "success_url": params["success_url"], "cancel_url": params["cancel_url"],
                "url": f"{self.url}/pay/{session_id}",
            }
            self.sessions[session_id] = session
            self.by_idempotency_key[idempotency_key] = session
            return session

    def completed(self, session_id, **changes) -> dict:
        """The session as Stripe's completed event carries it (paid, with a PaymentIntent)."""
        session = dict(self.sessions[session_id])
        number = session_id.rsplit("_", 1)[1]
        session.update(payment_status="paid", status="complete", payment_intent=f"pi_test_{number}")
        session.update(changes)
        return session

    def post_event(self, payload: bytes, stamp=None):
        return requests.post(self.webhook_url, data=payload, timeout=10, headers={
            "Stripe-Signature": sign(payload, self.secret, stamp),
            "Content-Type": "application/json"})

    # ------------------------------------------------------------ serving
    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, content_type="application/json", headers=()):
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                fake.requests.append(("POST", self.path, dict(self.headers)))
                if self.path == "/v1/checkout/sessions":
                    if not self.headers.get("Authorization", "").startswith("Bearer sk_test_"):
                        return self._send(401, json.dumps({"error": {"message": "bad key"}}))
                    session = fake.create_session(form_to_nested(parse_qsl(body)),
                                                  self.headers.get("Idempotency-Key"))
                    return self._send(200, json.dumps(session))
                if self.path.startswith("/pay/"):
                    session_id = self.path.split("/")[2]
                    payload = event("checkout.session.completed", fake.completed(session_id))
                    if fake.webhook_delay:  # Stripe's webhook comes on its own time
                        threading.Timer(fake.webhook_delay, fake.post_event, (payload,)).start()
                    else:
                        fake.post_event(payload)
                    return self._send(303, "", "text/plain",
                                      [("Location", fake.sessions[session_id]["success_url"])])
                return self._send(404, json.dumps({"error": {"message": "no such path"}}))

            def do_GET(self):
                fake.requests.append(("GET", self.path, dict(self.headers)))
                if self.path.startswith("/pay/"):
                    session = fake.sessions[self.path.split("/")[2]]
                    amount = session["amount_total"] / 100
                    return self._send(200, (
                        f"<!doctype html><title>Checkout</title><link rel='icon' href='data:,'>"
                        f"<h1 id='amount'>Pay {amount:.2f} "
                        f"{session['currency'].upper()}</h1><form method='post' "
                        f"action='/pay/{session['id']}'><button id='pay'>Pay</button></form>"),
                        "text/html")
                return self._send(404, json.dumps({"error": {"message": "no such path"}}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
