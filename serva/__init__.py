"""Serva: a self-hosted SMM reseller API server (Serva API v1)."""
import functools
import logging
import os
import random
import secrets
import time

from flask import Flask, g, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import MapAdapter

from .serve import log_info

REQUEST_ID_HEADER = "x-serva-request-id"
access_log = logging.getLogger("serva.access")


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _instance_secret(app) -> str:
    """A random secret kept in the instance folder, so restarts and worker processes share it.
    Written to a temporary file and linked into place, so processes starting together all
    end up reading the one secret that won."""
    path = os.path.join(app.instance_path, "secret_key")
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    with open(path) as handle:
        return handle.read().strip()


def default_config(app) -> dict:
    env = os.environ
    return {
        "DATABASE_URL": env.get("SERVA_DATABASE_URL")
        or "sqlite:///" + os.path.join(app.instance_path, "serva.sqlite"),
        "CURRENCY": env.get("SERVA_CURRENCY", "USD"),
        "INTEGER_IDS": _env_flag("SERVA_INTEGER_IDS"),
        "MAX_CONTENT_LENGTH": int(env.get("SERVA_MAX_BODY_BYTES", 256 * 1024)),
        "GUARD_WINDOW_SECONDS": int(env.get("SERVA_GUARD_WINDOW_SECONDS", 300)),
        "IDEMPOTENCY_TTL_SECONDS": int(env.get("SERVA_IDEMPOTENCY_TTL_SECONDS", 24 * 3600)),
        "KEY_LAST_USED_INTERVAL": int(env.get("SERVA_KEY_LAST_USED_INTERVAL", 60)),
        "SQLITE_SYNCHRONOUS": env.get("SERVA_SQLITE_SYNCHRONOUS", "FULL").upper(),
        "WRITE_WAIT_SECONDS": float(env.get("SERVA_WRITE_WAIT_SECONDS", 5)),
        # Threads that may wait to write at once; `serva serve` sizes it from --threads (the
        # default suits waitress's 4 threads of `make run`).
        "WRITE_WAITERS": int(env.get("SERVA_WRITE_WAITERS", 3)),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _env_flag("SERVA_SECURE_COOKIES"),
        "LOGIN_MAX_FAILURES": int(env.get("SERVA_LOGIN_MAX_FAILURES", 5)),
        "LOGIN_FAILURE_WINDOW_SECONDS": int(env.get("SERVA_LOGIN_FAILURE_WINDOW_SECONDS", 900)),
        "LOGIN_BACKOFF_SECONDS": int(env.get("SERVA_LOGIN_BACKOFF_SECONDS", 15)),
        "LOGIN_MAX_FAILURES_PER_ADDRESS": int(env.get("SERVA_LOGIN_MAX_FAILURES_PER_ADDRESS", 20)),
        "TRUSTED_PROXIES": int(env.get("SERVA_TRUSTED_PROXIES", 0)),
        "RATELIMIT_STORAGE_URI": env.get("SERVA_RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_KEY_PREFIX": env.get("SERVA_RATELIMIT_KEY_PREFIX", "serva"),
        "RATE_LIMIT_PER_KEY": env.get("SERVA_RATE_LIMIT_PER_KEY", "100/second"),
        "RATE_LIMIT_INVALID_KEYS": env.get("SERVA_RATE_LIMIT_INVALID_KEYS", "30/minute"),
        # Fulfilment (serva/worker.py, serva/provider_client.py)
        "SYNC_INTERVAL_SECONDS": int(env.get("SERVA_SYNC_INTERVAL_SECONDS", 60)),
        "DISPATCH_RETRY_SECONDS": int(env.get("SERVA_DISPATCH_RETRY_SECONDS", 30)),
        "DISPATCH_MAX_ATTEMPTS": int(env.get("SERVA_DISPATCH_MAX_ATTEMPTS", 8)),
        "DISPATCH_LEASE_SECONDS": int(env.get("SERVA_DISPATCH_LEASE_SECONDS", 120)),
        "PROVIDER_CONNECT_TIMEOUT": float(env.get("SERVA_PROVIDER_CONNECT_TIMEOUT", 5)),
        "PROVIDER_READ_TIMEOUT": float(env.get("SERVA_PROVIDER_READ_TIMEOUT", 30)),
        "WORKER_CONCURRENCY": int(env.get("SERVA_WORKER_CONCURRENCY", 16)),
    }


def create_app(test_config=None):
    from . import api, cli, db, ratelimit
    app = _App(__name__, instance_relative_config=True)
    app.session_interface = _SessionInterface(api.API_PATHS)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(default_config(app))
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    app.config["SECRET_KEY"] = (app.config.get("SECRET_KEY") or os.environ.get("SERVA_SECRET_KEY")
                                or _instance_secret(app))
    if app.config["SQLITE_SYNCHRONOUS"] not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("SERVA_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")

    if app.config["TRUSTED_PROXIES"]:
        # Behind N reverse proxies, take the client's address and scheme from their
        # X-Forwarded-* headers (sign-in throttling and the API's failed-key limit count per
        # client address).
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    app.wsgi_app = _RequestIds(app.wsgi_app)
    db.init_app(app)
    ratelimit.init_app(app)
    cli.init_app(app)
    app.register_blueprint(api.bp)
    _register_dashboard(app)
    from . import page
    page.init_app(app)
    _error_handlers(app)
    return app


# What werkzeug's binding of a request to the URL map reads besides the path, the query string
# and the method: the same values bind the same way.
_WHERE = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME",
          "HTTP_CONNECTION", "HTTP_UPGRADE")


def _wsgi_text(value: str) -> str:
    """A WSGI string (bytes as latin-1, PEP 3333) as the text werkzeug's binding decodes it."""
    return value.encode("latin1").decode(errors="replace")


class _App(Flask):
    """Flask, binding each request to the URL map without redoing what its host already
    decided. Flask's `create_url_adapter` reads the host (trusted-host check included), then
    werkzeug's `bind_to_environ` reads it again and IDNA-encodes it through Python's `idna`
    codec: ~67 k instructions per request, a fifth of a bare Flask request (bench/README.md).
    Here Flask and werkzeug do exactly that once per distinct host, scheme, script name and
    upgrade header (a bounded cache; a refused host raises on every request, as before), and
    each request gets a copy of that adapter with its own path, query string and method."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bound = functools.lru_cache(maxsize=256)(self._bind_where)

    def create_url_adapter(self, request):
        if request is None:
            return super().create_url_adapter(request)
        environ = request.environ
        trusted = self.config["TRUSTED_HOSTS"]
        host, template = self._bound(tuple(map(environ.get, _WHERE)), self.config["SERVER_NAME"],
                                     None if trusted is None else tuple(trusted))
        if trusted is not None:
            request.trusted_hosts = trusted
        request.host = host
        adapter = MapAdapter.__new__(MapAdapter)
        adapter.__dict__.update(template.__dict__)
        path, query = environ.get("PATH_INFO"), environ.get("QUERY_STRING")
        adapter.path_info = "/" if path is None else _wsgi_text(path)
        adapter.query_args = None if query is None else _wsgi_text(query)
        adapter.default_method = environ["REQUEST_METHOD"]
        return adapter

    def _bind_where(self, where, server_name, trusted_hosts):
        """(request.host, an adapter) as Flask binds a request from there (`server_name` and
        `trusted_hosts` are the config's, part of the cache key)."""
        environ = {name: value for name, value in zip(_WHERE, where) if value is not None}
        environ.update({"REQUEST_METHOD": "GET", "PATH_INFO": "/"})
        probe = self.request_class(environ)
        adapter = super().create_url_adapter(probe)
        return probe.host, adapter


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions for the dashboard, and none for the JSON API: the API
    authenticates by key and never reads or writes a session, yet Flask would parse the cookie,
    build the signing serializer and add `Vary: Cookie` on every call. An API request gets
    Flask's null session (readable as empty, never saved); the serializer is made once."""

    _cached = None

    def __init__(self, api_paths):
        self.api_paths = api_paths

    def open_session(self, app, request):
        if request.path in self.api_paths:
            return None  # Flask substitutes its null session
        return super().open_session(app, request)

    def get_signing_serializer(self, app):
        marker = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._cached
        if cached is None or cached[0] != marker:
            cached = self._cached = (marker, super().get_signing_serializer(app))
        return cached[1]


def _register_dashboard(app):
    try:
        from . import dashboard
    except ImportError:  # the dashboard is optional until its module exists
        return
    dashboard.init_app(app)


CLI_ID_PREFIX = "cli:"


_RID = "serva.request_id"  # the WSGI environ key of this request's id


def _new_request_id() -> str:
    # 128 random bits, 32 hex digits: a correlation id, not a secret, so the PRNG (reseeded
    # in every forked worker) rather than a getrandom() system call per request.
    return f"{random.getrandbits(128):032x}"


def request_id() -> str:
    """This request's id: made once, sent back in the header, the access log and 500 bodies,
    and kept on the order and ledger rows the request writes. Outside a request (an operator
    command) the id is made once per app context with a `cli:` prefix, so the rows one
    command wrote share an id that says where they came from."""
    if has_request_context():
        environ = request._get_current_object().environ
        rid = environ.get(_RID)
        if rid is None:  # a request context made without the WSGI app (tests)
            rid = environ[_RID] = _new_request_id()
        return rid
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = CLI_ID_PREFIX + _new_request_id()
    return rid


class _RequestIds:
    """WSGI middleware around the whole app: every response carries `x-serva-request-id`
    (whatever produced it: a view, an error handler, werkzeug's 413), and every request gets
    one access-log line, written and flushed before the answer leaves, with its method, path
    (never the query string: a key may travel there), status, time and request id.

    Done here rather than in Flask's before/after-request hooks: those run through Flask's
    hook machinery and context proxies on every call, which measured ~7 % of a `balance`
    (bench/README.md)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rid = environ[_RID] = _new_request_id()
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
            elapsed = (time.perf_counter() - started) * 1000
            status = answered[-1][:3] if answered else "500"
            log_info(access_log, f"{environ.get('REQUEST_METHOD')} {path} {status} "
                                 f"{elapsed:.1f}ms rid={rid}")


def _error_handlers(app):
    """Every error as JSON: HTTP errors by name, an unavailable database as 503 `busy`, anything
    else as 500 with the request id (never a traceback in a response)."""
    from . import db
    from .api import error_response, json_response
    from .errors import ApiError

    def busy(error):
        """503 `busy` with Retry-After: the database could not be written (busy past the wait
        bound, full, read-only); the transaction did not commit, so nothing was charged."""
        app.logger.warning("database unavailable, answered 503: %s rid=%s",
                           getattr(error, "orig", None) or error, request_id())
        return error_response(ApiError("busy", seconds=db.retry_after(db.get_engine())))

    @app.errorhandler(HTTPException)
    def http_error(error):
        code = (error.name or "error").lower().replace(" ", "_")
        response = json_response({"error": error.name, "code": code}, error.code or 500)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def server_error(error):
        if db.unavailable(error):
            return busy(error)
        app.logger.error("unhandled error, rid=%s", request_id(), exc_info=error)
        return json_response({"error": "Internal server error", "code": "internal_error",
                              "request_id": request_id()}, 500)
