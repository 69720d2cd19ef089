"""The console's blueprint and what every console request goes through: its own cookie, the
CSRF check, the signed-in operator, the second factor, the role's rights, the headers.

The console lives under /admin with its own session cookie (name, path /admin, SameSite
Strict, its own signing salt), so the partner dashboard's cookie is never read here and the
console's never sent to or read by the dashboard. A request passes, in order: CSRF (every
POST), the operator's live server-side session, the second factor (a session that passed
only the password reaches the second factor's pages and nothing else), then the view's right
from the one permission table (`operators.PERMISSIONS`); a refusal there is 403 and an
activity entry."""
import logging
from datetime import datetime, timezone
from functools import wraps

from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template,
                   request, session, url_for)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError

from .. import activity, db, operator_sessions, operators, second_factor
from ..request_ids import request_id

CONSOLE_PATH = "/admin"
CONSOLE_COOKIE = "serva_admin"
TOKEN_KEY = "operator_token"
# Endpoints a session that passed only the password may open (and the sign-in itself).
OPEN = {"console.login"}
HALF_SIGNED_IN = {"console.enrol", "console.second_factor", "console.logout"}

bp = Blueprint("console", __name__, url_prefix=CONSOLE_PATH)
log = logging.getLogger("serva.console")


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session under the console's own cookie name, path and salt."""
    salt = "serva-console-session"

    def get_cookie_name(self, app):
        return CONSOLE_COOKIE

    def get_cookie_path(self, app):
        return CONSOLE_PATH

    def get_cookie_samesite(self, app):
        return "Strict"

    @staticmethod
    def serves(path: str) -> bool:
        return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


def idle_seconds() -> int:
    return current_app.config["CONSOLE_IDLE_SECONDS"]


def operator():
    """The signed-in operator's row (with the session's columns), or None."""
    return g.get("operator")


def actor() -> str:
    return activity.operator_actor(g.operator.email)


def fully_signed_in(row) -> bool:
    return row is not None and (row.verified_at is not None or not second_factor.required(row))


@bp.before_request
def check_csrf():
    current_app.extensions["csrf"].protect()


@bp.before_request
def load_operator():
    token = session.get(TOKEN_KEY)
    row = None
    if token:
        with db.read() as conn:
            row = operator_sessions.find(conn, token, idle_seconds())
        if row is None:
            session.clear()
        elif row.seen_at <= db.now() - operator_sessions.TOUCH_EVERY:
            with db.write() as conn:
                operator_sessions.touch(conn, row.session_id)
    g.operator = row
    if request.endpoint in OPEN:
        return None
    if row is None:
        if request.method == "GET":
            return redirect(url_for("console.login", next=request.full_path))
        abort(401)
    if not fully_signed_in(row) and request.endpoint not in HALF_SIGNED_IN:
        return redirect(url_for("console.enrol" if not second_factor.enrolled(row)
                                else "console.second_factor"))
    return None


def needs(right: str):
    """The view's right from the permission table; without it, 403 and an activity entry."""
    operators.allowed("owner", right)  # an unknown right fails at import, not at request

    def decorate(view):
        @wraps(view)
        def checked(*args, **kwargs):
            if not operators.allowed(g.operator.role, right):
                log.warning("refused %s to operator %s (%s) rid=%s", right, g.operator.email,
                            g.operator.role, request_id())
                with db.write() as conn:
                    activity.record(conn, actor(), "refused", request.path,
                                    after={"right": right, "role": g.operator.role})
                abort(403)
            return view(*args, **kwargs)
        return checked
    return decorate


@bp.after_request
def security_headers(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
    return response


def error_page(title, message, status):
    return render_template("console/error.html", title=title, message=message), status


@bp.errorhandler(CSRFError)
def csrf_failed(error):
    return error_page("The form expired", "The form was missing its security token or it "
                      "expired. Go back, reload the page and try again.", 400)


@bp.errorhandler(401)
def unauthorized(error):
    return error_page("Sign in", "Sign in to the console first.", 401)


@bp.errorhandler(403)
def forbidden(error):
    return error_page("Not allowed", "Your role may not do this. The attempt was logged.", 403)


@bp.errorhandler(404)
def not_found(error):
    return error_page("Not found", "There is nothing here.", 404)


def apply(work, back):
    """One console change: `work(conn)` calls the domain function (the CLI's) and returns
    (action, subject, before, after, message); its activity entry is written in the same
    transaction. A domain refusal (a ValueError: AccountError, OrderError, ServiceError…)
    changes nothing and is shown with the CLI's own message."""
    try:
        with db.write() as conn:
            action, subject, before, after, message = work(conn)
            activity.record(conn, actor(), action, subject, before, after)
    except ValueError as error:
        return refuse(str(error), back)
    flash(message, "info")
    return redirect(back, 303)


def refuse(message: str, back: str):
    flash(message, "error")
    return redirect(back, 303)


def form(name: str, default: str = "") -> str:
    return (request.form.get(name) or default).strip()


def whole(text, what: str, minimum: int = 0):
    """A whole number from a form field, None when empty; ValueError naming the field."""
    if text is None or str(text).strip() == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number") from None
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return value


def moment(text: str) -> int:
    """An ISO 8601 date or time (UTC when no zone is given) as unix seconds."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 date/time: {text}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp())


def back_to(default: str) -> str:
    """Where a form asked to return to, if it is a console page; else `default`."""
    target = request.form.get("back", "")
    return target if target.startswith(CONSOLE_PATH + "/") and "//" not in target else default
