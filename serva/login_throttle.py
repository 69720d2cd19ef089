"""Fair sign-in throttling: guessing is slowed where it happens, and nobody can lock out anyone.

Failed sign-ins are rows of `login_failures` (email, client address, trusted device). Three
counts, each over the last LOGIN_FAILURE_WINDOW_SECONDS, decide whether an attempt may be
checked at all; past its threshold a count asks for a growing wait after its newest failure,
LOGIN_BACKOFF_SECONDS doubled per further failure and never more than the window:

- **email + address**: LOGIN_MAX_FAILURES free failures, then the backoff. An attacker's
  failures slow only their own address down for that email; the owner elsewhere is untouched.
- **address**, all emails: LOGIN_MAX_FAILURES_PER_ADDRESS free failures, then the backoff for
  that address's untrusted attempts (password spraying from one address).
- **email + trusted device**: a browser that signed in to the email before holds a signed
  device cookie. Its attempts count only against that device (LOGIN_MAX_FAILURES, then the
  backoff) and never against the address: the owner and a neighbour behind an attacker's NAT
  or proxy sign in while that address backs off.

A refused attempt is not checked and not counted (it cannot extend its own wait), and the
check and the count happen in one write transaction, so parallel guesses cannot all pass
one check. A success clears its own email+address (or email+device) failures.
"""
import hashlib
import secrets
from dataclasses import dataclass

from flask import current_app, request
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import and_, delete, func, insert, select

from . import db
from .schema import login_failures

DEVICE_COOKIE = "serva_device"
DEVICE_COOKIE_DAYS = 180
DEVICE_EMAILS = 5  # the emails one browser is trusted for (the most recent ones)


@dataclass
class Attempt:
    email: str
    addr: str
    device: str | None  # the trusted device id, when the browser holds one for this email
    row_id: int | None = None
    wait: int = 0  # seconds until an attempt is allowed; 0: this one goes ahead


# ---------------------------------------------------------------- the counts

def _backoff(conn, condition, free: int, stamp: int) -> int:
    config = current_app.config
    window = config["LOGIN_FAILURE_WINDOW_SECONDS"]
    count, newest = conn.execute(
        select(func.count(), func.max(login_failures.c.created_at))
        .where(condition, login_failures.c.created_at > stamp - window)).one()
    if count < free:
        return 0
    delay = min(config["LOGIN_BACKOFF_SECONDS"] * 2 ** min(count - free, 32), window)
    return max(0, newest + delay - stamp)


def _conditions(attempt: Attempt):
    """(condition, free failures) of each count that applies to this attempt."""
    config = current_app.config
    lf = login_failures.c
    if attempt.device is not None:
        return [(and_(lf.email == attempt.email, lf.device_id == attempt.device),
                 config["LOGIN_MAX_FAILURES"])]
    untrusted = lf.device_id.is_(None)
    return [(and_(lf.email == attempt.email, lf.remote_addr == attempt.addr, untrusted),
             config["LOGIN_MAX_FAILURES"]),
            (and_(lf.remote_addr == attempt.addr, untrusted),
             config["LOGIN_MAX_FAILURES_PER_ADDRESS"])]


def begin(email: str) -> Attempt:
    """Check the counts for this email from this client and, when allowed, count the attempt
    as a failure in the same transaction (`succeeded` or `not_a_failure` take it back)."""
    attempt = Attempt(email=email, addr=(request.remote_addr or "")[:64],
                      device=trusted_device(email))
    with db.write() as conn:
        stamp = db.now()
        attempt.wait = max(_backoff(conn, condition, free, stamp)
                           for condition, free in _conditions(attempt))
        if not attempt.wait:
            attempt.row_id = conn.execute(insert(login_failures).values(
                email=email, remote_addr=attempt.addr, device_id=attempt.device,
                created_at=stamp)).inserted_primary_key[0]
    return attempt


def not_a_failure(attempt: Attempt) -> None:
    """The password was right but the attempt did not sign in (a banned account)."""
    with db.write() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.id == attempt.row_id))


def succeeded(attempt: Attempt) -> None:
    """The right password: forget this client's earlier failures for the email."""
    condition, _ = _conditions(attempt)[0]
    with db.write() as conn:
        conn.execute(delete(login_failures).where(
            (login_failures.c.id == attempt.row_id) | condition))


def message(wait: int) -> str:
    if wait < 120:
        amount = f"{wait} second{'s' if wait != 1 else ''}"
    else:
        minutes = -(-wait // 60)
        amount = f"{minutes} minutes"
    return f"Too many failed sign-in attempts. Try again in {amount}."


# ---------------------------------------------------------------- trusted devices

def _serializer():
    return URLSafeTimedSerializer(current_app.secret_key, salt="serva.device")


def _tag(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:16]


def _device_cookie() -> dict:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return {}
    try:
        data = _serializer().loads(raw, max_age=DEVICE_COOKIE_DAYS * 86400)
    except BadData:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("d"), str) \
            or not isinstance(data.get("e"), list):
        return {}
    return data


def trusted_device(email: str) -> str | None:
    """This browser's device id when it has signed in to `email` before (signed cookie)."""
    data = _device_cookie()
    return data["d"][:32] if _tag(email) in data.get("e", ()) else None


def remember_device(response, email: str) -> None:
    """After a successful sign-in: this browser is trusted for `email` from now on."""
    data = _device_cookie()
    device = data.get("d") or secrets.token_hex(16)
    tag = _tag(email)
    emails = [t for t in data.get("e", []) if t != tag][-(DEVICE_EMAILS - 1):] + [tag]
    response.set_cookie(DEVICE_COOKIE, _serializer().dumps({"d": device, "e": emails}),
                        max_age=DEVICE_COOKIE_DAYS * 86400, path="/profile", httponly=True,
                        samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
