"""A provider panel over real HTTP on 127.0.0.1 that misbehaves on purpose (the tests' fault
injector): it speaks the API v2 convention, counts every `add` it receives, and answers each
request as the test scripted it — slow, HTTP 500, malformed JSON, refusals, odd ids and
statuses. Threaded, bounded, stopped by the fixture."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

KEY = "fake-provider-key-0123456789abcdef"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a listen backlog for several workers' concurrent calls

    def handle_error(self, request, client_address):
        pass  # a client killed mid-request (the crash tests) is expected here


class FaultyProvider:
    """`adds`: every add request received (params + idempotency key), in arrival order.
    `add_script`: how to answer the next adds (popped from the front; then `add_default`):
      "ok" (string id), "int" (integer id), "slow" (placed, but the reply comes after
      `slow_seconds`), an HTTP status such as "500", "502", "429" (nothing placed), the same
      followed by " placed" ("500 placed": placed, then that status, like a panel whose
      post-insert code fails or a proxy that lost the reply), "malformed", "reset" (placed,
      connection closed without reply),
      "hold" (placed, but the reply waits until the test sets `release`; `held` is set once
      the request has arrived), or {"error": "..."} (a refusal; nothing placed).
    `status_of`: provider order id -> the status object to report (or {"error": ...});
    `add_requests`: how many add requests arrived (placed or not).
    `status_script`: "500"/"malformed"/"slow" for the next status calls.
    `idempotent`: behave like a Serva (x-serva-request-id header, Idempotency-Key replays).
    Refills and cancels: `refills_asked` / `cancels_asked` (the order ids received);
    `refill_script` / `cancel_script`: "500", "slow" or {"error": ...} for the next requests;
    `refill_status_of`: the provider's refill id -> its status (default Pending)."""

    def __init__(self, idempotent=False, delay=0.0):
        self.lock = threading.Lock()
        self.adds = []
        self.add_requests = 0
        self.placed = {}  # provider order id -> add params
        self.by_key = {}  # idempotency key -> reply
        self.add_script = []
        self.add_default = "ok"
        self.status_of = {}
        self.status_script = []
        self.status_calls = []
        self.balance = "100.5"
        self.idempotent = idempotent
        self.delay = delay
        self.slow_seconds = 1.5
        self.next_id = 5000
        # The catalog `services` lists: a list (sent as JSON) or raw JSON text, to write numbers
        # exactly as a test needs them (0.89 as a number, "0.89" as a string, 1.2e-3).
        self.services = [{"service": 1, "name": "Fake followers", "type": "Default", "rate": "0.4",
                          "min": 10, "max": 10000, "category": "Fake"}]
        self.refills_asked, self.refill_script, self.refill_status_of = [], [], {}
        self.cancels_asked, self.cancel_script = [], []
        self.next_refill = 9000
        self.held = threading.Event()
        self.release = threading.Event()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v2"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def keys_received(self):
        return [entry["idempotency_key"] for entry in self.adds]

    # ---------------------------------------------------------------- answers

    def answer(self, params, headers):
        action = params.get("action")
        if params.get("key") != KEY:
            return 200, {"error": "Invalid API key"}
        if action == "balance":
            return 200, {"balance": self.balance, "currency": "USD"}
        if action == "add":
            return self._add(params, headers)
        if action == "status":
            with self.lock:
                self.status_calls.append(params.get("orders") or params.get("order"))
                mode = self.status_script.pop(0) if self.status_script else None
            if mode:
                return mode, None
            if "orders" in params:
                return 200, {token: self._status(token) for token in params["orders"].split(",")}
            return 200, self._status(params.get("order", ""))
        if action in ("refill", "cancel"):
            return self._request(action, params)
        if action == "refill_status":
            tokens = [t for t in params.get("refills", params.get("refill", "")).split(",") if t]
            with self.lock:
                return 200, [{"refill": t, "status": self.refill_status_of.get(t, "Pending")}
                             for t in tokens]
        if action == "services":
            return ("raw", self.services) if isinstance(self.services, str) else (200, self.services)
        return 200, {"error": "Incorrect request"}

    def _request(self, action, params):
        with self.lock:
            asked = self.refills_asked if action == "refill" else self.cancels_asked
            asked.append(params.get("order") or params.get("orders"))
            script = self.refill_script if action == "refill" else self.cancel_script
            mode = script.pop(0) if script else "ok"
            if isinstance(mode, dict):
                return 200, mode
            if mode != "ok":
                return mode, {}
            if action == "cancel":
                return 200, [{"order": params.get("orders"), "cancel": 1}]
            self.next_refill += 1
            return 200, {"refill": self.next_refill}

    def _status(self, token):
        with self.lock:
            if token in self.status_of:
                return self.status_of[token]
            if token in self.placed:
                return {"status": "Pending", "remains": None, "start_count": None, "charge": "0"}
        return {"error": "Incorrect order ID"}

    def _add(self, params, headers):
        key = headers.get("Idempotency-Key")
        with self.lock:
            self.add_requests += 1
            if self.idempotent and key in self.by_key:
                return 200, self.by_key[key]
            mode = self.add_script.pop(0) if self.add_script else self.add_default
            if isinstance(mode, dict):
                return 200, mode
            if mode.isdigit() or mode == "malformed_unplaced":
                return mode, None
            self.next_id += 1
            order = self.next_id if mode == "int" else f"P{self.next_id}"
            self.adds.append({**{k: v for k, v in params.items() if k != "key"},
                              "idempotency_key": key, "order": str(order)})
            self.placed[str(order)] = params
            reply = {"order": order}
            if self.idempotent and key:
                self.by_key[key] = reply
        if mode in ("slow", "malformed", "reset", "hold"):
            return mode, reply
        if mode.endswith(" placed"):
            return mode.split()[0], reply
        return 200, reply

    def _handler(provider):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                params = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                if provider.delay:
                    time.sleep(provider.delay)
                status, body = provider.answer(params, self.headers)
                if status == "slow":
                    time.sleep(provider.slow_seconds)
                    status = 200
                if status == "hold":
                    provider.held.set()
                    provider.release.wait(10)  # bounded: a failing test still ends
                    status = 200
                if status == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if status == "slow_status":
                    time.sleep(provider.slow_seconds)
                    status, body = 200, {}
                if status == "raw":
                    self._send(200, body.encode(), "application/json")
                elif isinstance(status, str) and status.isdigit():
                    self._send(int(status), b"<html>Something went wrong</html>", "text/html")
                elif status in ("malformed", "malformed_unplaced"):
                    self._send(200, b'{"order": 12', "application/json")
                else:
                    self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status, payload, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                if provider.idempotent:
                    self.send_header("x-serva-request-id", "fake")
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass
        return Handler
