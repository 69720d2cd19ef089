"""Signing in to the console: password (the dashboard's fair throttling, counted apart from
partners' sign-ins), then the second factor — enrolment with a QR code and the secret as text
on an owner's first sign-in, or a code (TOTP or a recovery code) — and signing out."""
from flask import redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from .. import activity, db, login_throttle, operator_sessions, operators, second_factor
from ..accounts import normalize_email
from .base import TOKEN_KEY, bp, fully_signed_in, operator

_DUMMY_HASH = generate_password_hash("serva-console-dummy")


def throttle_key(email: str, step: str = "password") -> str:
    """Operators' failures are counted apart from partners' (a guess at one never slows the
    other), by the throttle the dashboard uses; second-factor guesses apart from passwords."""
    return f"operator-{step}:{email}"[:254]


def _login_page(error=None, status=200, email=""):
    return render_template("console/login.html", error=error, email=email), status


def _next_page():
    target = request.args.get("next", "")
    return target if target.startswith("/admin/") and not target.startswith("//") else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    if fully_signed_in(operator()):
        return redirect(url_for("console.overview"))
    if request.method == "GET":
        return _login_page()
    email = normalize_email(request.form.get("email", ""))[:254]
    password = request.form.get("password", "")
    attempt = login_throttle.begin(throttle_key(email))
    if attempt.wait:
        page, status = _login_page(login_throttle.message(attempt.wait), 429, email)
        return page, status, {"Retry-After": str(attempt.wait)}
    with db.read() as conn:
        row = operators.get_by_email(conn, email) if email else None
    if row is None:
        check_password_hash(_DUMMY_HASH, password)  # the same cost as a wrong password
        return _login_page("Wrong email or password.", 200, email)
    if not operators.check_password(row, password):
        return _login_page("Wrong email or password.", 200, email)
    if row.disabled:
        login_throttle.not_a_failure(attempt)
        return _login_page("This operator is disabled.", 403, email)
    login_throttle.succeeded(attempt)
    with db.write() as conn:
        if operator() is not None:  # a half-done sign-in in this browser ends here
            operator_sessions.revoke(conn, operator().session_id)
        token = operator_sessions.create(conn, row.id, verified=not second_factor.required(row))
        activity.record(conn, activity.operator_actor(row.email), "operator.sign_in", row.email)
    session.clear()  # a fresh session and CSRF token: nothing carried over from before
    session[TOKEN_KEY] = token
    if second_factor.required(row):
        return redirect(url_for("console.second_factor" if second_factor.enrolled(row)
                                else "console.enrol"))
    return redirect(_next_page() or url_for("console.overview"))


@bp.route("/enrol", methods=["GET", "POST"])
def enrol():
    """First sign-in of an operator who must have a second factor: scan or type the secret,
    confirm with a code, get the ten recovery codes (shown this once)."""
    row = operator()
    if second_factor.enrolled(row):
        return redirect(url_for("console.second_factor"))
    error = None
    if request.method == "POST":
        with db.write() as conn:
            fresh = operators.get_by_id(conn, row.id)
            codes = second_factor.confirm(conn, fresh, request.form.get("code", ""))
            if codes:
                operator_sessions.mark_verified(conn, row.session_id)
                activity.record(conn, activity.operator_actor(row.email),
                                "operator.enrol_2fa", row.email)
        if codes:
            return render_template("console/recovery_codes.html", codes=codes)
        error = "That code is not right. Check the phone's clock and try the next one."
    with db.write() as conn:
        secret = second_factor.pending_secret(conn, operators.get_by_id(conn, row.id))
    uri = second_factor.provisioning_uri(secret, row.email)
    return render_template("console/enrol.html", secret=secret,
                           qr=second_factor.qr_data_uri(uri), error=error), 200 if not error else 400


def second_factor_page():
    row = operator()
    if not second_factor.enrolled(row):
        return redirect(url_for("console.enrol"))
    if fully_signed_in(row):
        return redirect(url_for("console.overview"))
    error = None
    if request.method == "POST":
        attempt = login_throttle.begin(throttle_key(row.email, "code"))
        if attempt.wait:
            error = login_throttle.message(attempt.wait)
        else:
            with db.write() as conn:
                passed = second_factor.verify(conn, operators.get_by_id(conn, row.id),
                                              request.form.get("code", ""))
                if passed:
                    operator_sessions.mark_verified(conn, row.session_id)
            if passed:
                login_throttle.succeeded(attempt)
                return redirect(url_for("console.overview"))
            error = "That code is not right (or was used already)."
    return render_template("console/second_factor.html", error=error), 200 if not error else 400


bp.add_url_rule("/second-factor", endpoint="second_factor", view_func=second_factor_page,
                methods=["GET", "POST"])


@bp.route("/logout", methods=["POST"])
def logout():
    row = operator()
    with db.write() as conn:
        operator_sessions.revoke(conn, row.session_id)
    session.clear()
    return redirect(url_for("console.login"))
