"""The partner dashboard under /profile/: sign-in, API access, one-time key reveal, rotate, revoke,
password change, sign out (here or everywhere).

Server-rendered pages on the same app. Sessions come from Flask-Login, backed by a server-side
row per sign-in (serva/sessions.py) so that signing out really ends them, and every form
carries a Flask-WTF CSRF token; the JSON API is exempt (it authenticates by key, never by
cookie). A raw key exists only in the response to the POST that created it: it is never
stored, redirected with, flashed or put in the session.
"""
from datetime import datetime, timezone

from flask import (Blueprint, current_app, flash, redirect, render_template, request, session,
                   url_for)
from flask_login import (LoginManager, UserMixin, current_user, login_required, login_user,
                         logout_user)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.security import check_password_hash, generate_password_hash

from . import accounts, db, keys, login_throttle, services, sessions
from .catalog import service_entry
from .ids import format_service_id, numeric_ids
from .money import format_amount
from .schema import ID_FORMATS

bp = Blueprint("dashboard", __name__, url_prefix="/profile")
login_manager = LoginManager()
csrf = CSRFProtect()

# Checked when the email is unknown, so a wrong email costs as much time as a wrong password.
_DUMMY_HASH = generate_password_hash("serva-dummy-password")
CONFIRM_TEXT = "I understand the current key stops working immediately"
SAMPLE_ORDER = "ORD-100023"
MIN_PASSWORD_LENGTH = accounts.MIN_PASSWORD_LENGTH


class Partner(UserMixin):
    """The signed-in account; loaded fresh from the database on every request.

    Flask-Login keeps `get_id()` in the session cookie: here that is the session's random
    token, not the account id, so the cookie is only as good as its server-side row."""

    def __init__(self, row, token):
        self.row = row
        self.id = row.id
        self.session_id = row.session_id
        self.token = token

    def get_id(self):
        return self.token


def _session_lifetime() -> int:
    return int(current_app.permanent_session_lifetime.total_seconds())


@login_manager.user_loader
def load_partner(token):
    with db.read() as conn:
        row = sessions.account_for(conn, token, _session_lifetime())
    return Partner(row, token) if row is not None else None


def _sign_in(account_id: int) -> None:
    """A fresh session (and CSRF token) with a new server-side row."""
    with db.write() as conn:
        token = sessions.create(conn, account_id)
        row = sessions.account_for(conn, token, _session_lifetime())
    session.clear()
    login_user(Partner(row, token))


def _end_session(revoke_all: bool = False) -> None:
    """Sign out here (this session's row revoked) or everywhere (every row of the account)."""
    if current_user.is_authenticated:
        with db.write() as conn:
            if revoke_all:
                sessions.revoke_all(conn, current_user.id)
            else:
                sessions.revoke(conn, current_user.session_id)
    logout_user()
    session.clear()


def banned_message(row) -> str:
    reason = (row.ban_reason or "").strip()
    return f"This account is banned: {reason}" if reason else "This account is banned."


# ---------------------------------------------------------------- sign-in

def _render_login(error=None, status=200, email=""):
    return current_app.make_response((render_template("login.html", error=error, email=email),
                                      status))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for(".api"))
    if request.method == "GET":
        return _render_login()
    email = accounts.normalize_email(request.form.get("email", ""))[:254]
    password = request.form.get("password", "")
    attempt = login_throttle.begin(email)
    if attempt.wait:
        response = _render_login(login_throttle.message(attempt.wait), 429, email)
        response.headers["Retry-After"] = str(attempt.wait)
        return response
    with db.read() as conn:
        row = accounts.get_by_email(conn, email) if email else None
    if row is None or not row.password_hash:
        check_password_hash(_DUMMY_HASH, password)  # the same cost as a wrong password
        return _render_login("Wrong email or password.", 200, email)
    if not accounts.check_password(row, password):
        return _render_login("Wrong email or password.", 200, email)
    if row.banned:
        login_throttle.not_a_failure(attempt)
        return _render_login(banned_message(row), 403, email)
    login_throttle.succeeded(attempt)
    _sign_in(row.id)
    response = redirect(url_for(".api"))
    login_throttle.remember_device(response, email)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    _end_session()
    flash("You are signed out.", "info")
    return redirect(url_for(".login"))


@bp.route("/logout-everywhere", methods=["POST"])
@login_required
def logout_everywhere():
    _end_session(revoke_all=True)
    flash("You are signed out on every device and browser.", "info")
    return redirect(url_for(".login"))


@bp.route("/password", methods=["POST"])
@login_required
def change_password():
    """Current password + new one (twice). Wrong current passwords count as sign-in failures
    (the same throttle), and a change signs out every other session."""
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    if len(new) < MIN_PASSWORD_LENGTH:
        return _refuse(f"The new password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if new != request.form.get("confirm_password", ""):
        return _refuse("The new password and its confirmation differ.")
    attempt = login_throttle.begin(current_user.row.email)
    if attempt.wait:
        return _refuse(login_throttle.message(attempt.wait))
    if not accounts.check_password(current_user.row, current):
        return _refuse("The current password is wrong.")
    login_throttle.succeeded(attempt)
    with db.write() as conn:
        accounts.set_password(conn, current_user.id, new)
        ended = sessions.revoke_all(conn, current_user.id, keep=current_user.session_id)
    flash("Password changed." + (f" {_ended_text(ended)}" if ended else ""), "info")
    return redirect(url_for(".api"))


def _ended_text(count: int) -> str:
    return f"{count} other session{'s were' if count != 1 else ' was'} signed out."


@bp.route("/")
def index():
    return redirect(url_for(".api"))


# ---------------------------------------------------------------- the API dashboard

def _examples_context(rows, raw_key=None) -> dict:
    """What the ready-to-paste examples are filled in with: this server's URL and a real service."""
    sample = next((row for row in rows if row.kind == "default"), None)
    return {
        "endpoint": request.url_root + "api/v1",
        "example_key": raw_key or "YOUR_API_KEY",
        "sample_service": format_service_id(sample.id, numeric=False) if sample else "1234",
        "sample_quantity": sample.min_quantity if sample else 1000,
        "sample_order": SAMPLE_ORDER,
    }


def _render_api(raw_key=None):
    account_id = current_user.id
    with db.read() as conn:
        row = accounts.get_by_id(conn, account_id)
        key = keys.active_key(conn, account_id)
        rows = services.catalog(conn, account_id)
        live_sessions = sessions.live_count(conn, account_id, _session_lifetime())
    numeric = numeric_ids(row)
    catalog = [service_entry(service, services.effective_rate(service.rate, service.custom_rate,
                                                              row.discount_bp), numeric)
               for service in rows]
    return render_template(
        "api.html", account=row, key=key, raw_key=raw_key, catalog=catalog,
        other_sessions=live_sessions - 1, min_password_length=MIN_PASSWORD_LENGTH,
        balance=format_amount(row.balance), currency=current_app.config["CURRENCY"],
        confirm_text=CONFIRM_TEXT, numeric_ids=numeric,
        **_examples_context(rows, raw_key))


@bp.route("/api/")
@login_required
def api():
    return _render_api()


@bp.route("/api/request-access", methods=["POST"])
@login_required
def request_access():
    with db.write() as conn:
        recorded = accounts.request_api_access(conn, current_user.id)
    if recorded:
        flash("API access requested. The operator will review your request.", "info")
    elif current_user.row.api_access == "approved":
        flash("API access is already approved.", "info")
    else:
        flash("Your request is already waiting for the operator.", "info")
    return redirect(url_for(".api"))


def _refuse(message: str):
    flash(message, "error")
    return redirect(url_for(".api"))


def _confirmed() -> bool:
    return request.form.get("confirm") == "yes"


def _issue_key(rotate: bool):
    """Create (no active key) or rotate (an active key, confirmed) and reveal the raw key once.

    The checks run inside the write transaction, so a ban or a second tab cannot slip between
    check and write."""
    if rotate and not _confirmed():
        return _refuse("Tick the confirmation to rotate: the current key stops working at once.")
    with db.write() as conn:
        row = accounts.get_by_id(conn, current_user.id)
        active = keys.active_key(conn, row.id)
        if row.banned:
            return _refuse(banned_message(row))  # the next request signs the partner out
        if row.api_access != "approved":
            return _refuse("API access is not approved for this account yet.")
        if active is not None and not rotate:
            return _refuse("You already have an active key. Rotate it to get a new one.")
        if active is None and rotate:
            return _refuse("There is no active key to rotate. Create one instead.")
        raw_key = keys.create_key(conn, row.id)
        # A rotation is what a partner does who fears a leak: end every other session too.
        ended = sessions.revoke_all(conn, row.id, keep=current_user.session_id) if rotate else 0
    if ended:
        flash(_ended_text(ended), "info")
    return _render_api(raw_key=raw_key)


@bp.route("/api/key", methods=["POST"])
@login_required
def create_key():
    return _issue_key(rotate=False)


@bp.route("/api/key/rotate", methods=["POST"])
@login_required
def rotate_key():
    return _issue_key(rotate=True)


@bp.route("/api/id-format", methods=["POST"])
@login_required
def set_id_format():
    """The partner's id format: how the API shows order, service and refill ids (serva.ids)."""
    choice = request.form.get("id_format")
    if choice not in ID_FORMATS:
        return _refuse("Choose prefixed or numeric ids.")
    with db.write() as conn:
        accounts.set_id_format(conn, current_user.id, choice)
    example = "100023 and 1234" if choice == "numeric" else '"ORD-100023" and "1234"'
    flash(f"Ids are now {choice}: the API shows {example}.", "info")
    return redirect(url_for(".api"))


@bp.route("/api/key/revoke", methods=["POST"])
@login_required
def revoke_key():
    if not _confirmed():
        return _refuse("Tick the confirmation to revoke: the key stops working at once.")
    with db.write() as conn:
        revoked = keys.revoke_key(conn, current_user.id)
    if not revoked:
        return _refuse("There is no active key to revoke.")
    flash("The key is revoked. Requests with it now get key_revoked.", "info")
    return redirect(url_for(".api"))


# ---------------------------------------------------------------- request hooks

@bp.before_request
def check_csrf():
    """Every POST of the dashboard carries the form's CSRF token (Flask-WTF)."""
    csrf.protect()


@bp.before_request
def sign_out_banned():
    """A partner banned while signed in is signed out on the next request, and told why."""
    if current_user.is_authenticated and current_user.row.banned:
        message = banned_message(current_user.row)
        _end_session()
        flash(message, "error")
        return redirect(url_for(".login"))
    return None


@bp.after_request
def private_pages(response):
    """Dashboard pages may hold a raw key or account data: never cache, never frame."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"  # CSRF over HTTPS checks the Referer
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    return response


@bp.errorhandler(CSRFError)
def csrf_failed(error):
    return render_template("error.html", title="The form expired",
                           message="The form was missing its security token or it expired. "
                                   "Go back, reload the page and try again."), 400


def utc_time(stamp) -> str:
    if stamp is None:
        return "never"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def init_app(app):
    login_manager.init_app(app)
    login_manager.login_view = "dashboard.login"
    login_manager.login_message = "Please sign in to open the API dashboard."
    login_manager.login_message_category = "info"
    # The CSRF check is the dashboard's: its forms. The JSON API authenticates by key, never
    # by cookie, so the check runs in the blueprint's own hook (`check_csrf`):
    # WTF_CSRF_CHECK_DEFAULT off + `protect()` is Flask-WTF's documented way to check
    # selected views.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.jinja_env.filters["utc_time"] = utc_time
    app.register_blueprint(bp)
