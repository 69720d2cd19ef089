"""Serva: a self-hosted SMM reseller API server (Serva API v1)."""
import os
import secrets

from flask import Config, Flask, Request, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import settings
from .request_ids import REQUEST_ID_HEADER, RequestIds, request_id

__all__ = ["REQUEST_ID_HEADER", "create_app", "request_id"]


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


def create_app(test_config=None):
    """The app. Its settings come from the environment (serva.settings), where the instance
    folder's config.py — or `test_config` instead of it — may set any app.config entry;
    a setting that cannot work raises settings.SettingsError (a ValueError)."""
    from . import api, console, dashboard, db, page, partner, ratelimit
    from .payments import views as payment_views
    app = Flask(__name__, instance_relative_config=True)
    app.session_interface = ApiWithoutSessions(api.API_PATHS, console.ConsoleSessions())
    os.makedirs(app.instance_path, exist_ok=True)
    given = Config(app.instance_path)
    if test_config is None:
        given.from_pyfile("config.py", silent=True)
    else:
        given.from_mapping(test_config)
    app.config.from_mapping(given)
    app.config.from_mapping(settings.load(config=given).config(app.instance_path))
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or _instance_secret(app)
    app.request_class = _request_class(app.config)

    if app.config["TRUSTED_PROXIES"]:
        # Behind N reverse proxies, take the client's address and scheme from their
        # X-Forwarded-* headers (sign-in throttling and the API's failed-key limit count per
        # client address). waitress passes those headers on only when told to
        # (--no-clear-untrusted-proxy-headers; the Makefile's `run` does).
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    app.wsgi_app = RequestIds(app.wsgi_app)
    db.init_app(app)
    ratelimit.init_app(app)
    app.register_blueprint(api.bp)
    dashboard.init_app(app)
    console.init_app(app)
    partner.init_app(app)
    page.init_app(app)
    payment_views.init_app(app)
    _error_handlers(app)
    return app


def _request_class(config):
    """Flask's Request with this app's body limits as plain values, set once from its settings.
    Flask's own properties look each limit up in `current_app.config` on every access, a dozen
    context lookups for every form read; `request.max_content_length = …` still sets one
    request's limit."""
    return type("Request", (Request,), {
        "max_content_length": config["MAX_CONTENT_LENGTH"],
        "max_form_memory_size": config["MAX_FORM_MEMORY_SIZE"],
        "max_form_parts": config["MAX_FORM_PARTS"]})


class ApiWithoutSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions for the dashboard, and none for the JSON API: the API
    authenticates by key and never reads or writes a session, so an API request gets Flask's
    null session (readable as empty, never saved, no `Vary: Cookie`) and a dashboard cookie
    sent along is not even parsed. Under /admin the console's own cookie (`console`, a
    session interface of its own name, path and salt) is the only one read or written."""

    def __init__(self, api_paths, console):
        self.api_paths = api_paths
        self.console = console

    def open_session(self, app, request):
        if request.path in self.api_paths:
            return None  # Flask substitutes its null session
        if self.console.serves(request.path):
            return self.console.open_session(app, request)
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        if has_request_context() and self.console.serves(request.path):
            return self.console.save_session(app, session, response)
        return super().save_session(app, session, response)


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
