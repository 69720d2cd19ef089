"""Request ids and the access log.

Every response carries `x-serva-request-id`, whatever produced it (a view, an error handler,
werkzeug's 413), and every request gets one line on the `serva.access` logger with its
method, path (never the query string: a key may travel there), status, time and that id.
The id is kept on the order and ledger rows the request writes, so a partner quoting it
leads to both the log line and the rows.
"""
import logging
import random
import time

from flask import g, has_request_context, request

REQUEST_ID_HEADER = "x-serva-request-id"
CLI_ID_PREFIX = "cli:"
ENVIRON_KEY = "serva.request_id"  # where the WSGI environ holds this request's id

access_log = logging.getLogger("serva.access")
ACCESS_LINE = "%s %s %s %.1fms rid=%s"


def new_request_id() -> str:
    # 128 random bits, 32 hex digits: a correlation id, not a secret, so the PRNG (reseeded
    # in every forked worker) rather than a getrandom() system call per request.
    return f"{random.getrandbits(128):032x}"


def request_id() -> str:
    """This request's id. Outside a request (an operator command) the id is made once per
    app context with a `cli:` prefix, so the rows one command wrote share an id that says
    where they came from."""
    if has_request_context():
        environ = request.environ
        rid = environ.get(ENVIRON_KEY)
        if rid is None:  # a request context made without the WSGI app (tests)
            rid = environ[ENVIRON_KEY] = new_request_id()
        return rid
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = CLI_ID_PREFIX + new_request_id()
    return rid


class RequestIds:
    """WSGI middleware around the whole app: the header on every response and the access
    line, written before the answer's body is sent."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rid = environ[ENVIRON_KEY] = new_request_id()
        answered = []

        def start(status, headers, exc_info=None):
            headers.append((REQUEST_ID_HEADER, rid))
            answered.append(status)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            # PATH_INFO is the path's bytes as latin-1 (PEP 3333); shown as UTF-8 text.
            path = environ.get("PATH_INFO", "").encode("latin-1", "replace").decode(
                "utf-8", "replace")
            status = answered[-1][:3] if answered else "500"
            if access_log.isEnabledFor(logging.INFO):
                # The record made and handled directly (logging's public makeRecord and
                # handle): `info()` would also walk the stack for the caller's file and line,
                # which for this one line are always this place.
                access_log.handle(access_log.makeRecord(
                    access_log.name, logging.INFO, __file__, 0, ACCESS_LINE,
                    (environ.get("REQUEST_METHOD"), path, status,
                     (time.perf_counter() - started) * 1000, rid), None))
