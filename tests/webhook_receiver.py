"""A webhook receiver over real HTTP on 127.0.0.1 that misbehaves on purpose: it records
every request (headers, raw body) and answers each as the test scripted it. `script` is
popped from the front, then `default`; an answer is
  "ok" (204), an HTTP status such as "500" or "410", "429 3" / "503 7" (with Retry-After),
  "slow" (the answer after `slow_seconds`), "close" (a 200 status line and headers promising
  a body, then the connection closed), "hangup" (204, kept alive by its headers, then the
  connection closed: an idle connection the receiver drops), "redirect URL" (302 to URL), or "delay" (answer 200
  after `delay` seconds: the bench's 50 ms receiver).
`tls`: an ssl.SSLContext to serve HTTPS with. `unique()`: the distinct webhook-ids received (the receiver's de-duplication)."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # a sender killed mid-request, or a connection we closed on purpose


class Receiver:
    def __init__(self, delay=0.0, tls=None):
        self.lock = threading.Lock()
        self.requests = []  # (headers dict with lower-case names, body bytes, path)
        self.peers = []  # each request's client address: one per connection it came on
        self.script = []
        self.default = "ok"
        self.slow_seconds = 3.0
        self.delay = delay
        self.server = _Server(("127.0.0.1", 0), self._handler())
        if tls is not None:  # an ssl.SSLContext: the receiver speaks HTTPS
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/serva"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def unique(self) -> set:
        with self.lock:
            return {headers["webhook-id"] for headers, _, _ in self.requests}

    def _next(self):
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                              body, self.path))
                    receiver.peers.append(self.client_address)
                answer = receiver._next()
                if receiver.delay:
                    time.sleep(receiver.delay)
                if answer == "slow":
                    time.sleep(receiver.slow_seconds)
                    answer = "ok"
                if answer == "close":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                headers = {}
                if answer in ("ok", "hangup"):
                    status = 204
                    self.close_connection = answer == "hangup"
                elif answer.startswith("redirect "):
                    status, headers = 302, {"Location": answer.split(" ", 1)[1]}
                else:
                    code, _, wait = answer.partition(" ")
                    status = int(code)
                    if wait:
                        headers["Retry-After"] = wait
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture
def receiver():
    """A receiver on 127.0.0.1 for one test (the webhook tests import this fixture)."""
    server = Receiver().start()
    yield server
    server.stop()
