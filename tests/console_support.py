"""What the console's tests share: operators made in the database, the CSRF token read from
a page, and signing in over the forms (password, then enrolment or the second factor)."""
import re
import time

import pyotp

from serva import db, operators

OWNER, SUPPORT, PASSWORD = "owner@example.com", "support@example.com", "operator-pass-1"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET_RE = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
CODES_RE = re.compile(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>")


def make_operator(app, email=OWNER, role="owner", password=PASSWORD):
    with app.app_context(), db.write() as conn:
        return operators.create(conn, email, role, password)


def token(html: str) -> str:
    return TOKEN_RE.search(html).group(1)


def csrf(client, path="/admin/login") -> str:
    return token(client.get(path).get_data(as_text=True))


def post(client, path, data=None, page=None, **kwargs):
    """A form POST with the CSRF token of `page` (default: the sign-in page)."""
    return client.post(path, data={**(data or {}), "csrf_token": csrf(client, page or "/admin/login")},
                       **kwargs)


def password_step(client, email=OWNER, password=PASSWORD):
    return post(client, "/admin/login", {"email": email, "password": password})


def code(secret: str, steps_ahead: int = 0) -> str:
    """A TOTP code; `steps_ahead` 1 gives the next step's (accepted: a skewed clock), for a
    second sign-in within the same 30 seconds (a code is good once)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def enrol(client):
    """An owner's first sign-in, after the password: (secret, recovery codes)."""
    page = client.get("/admin/enrol").get_data(as_text=True)
    secret = SECRET_RE.search(page).group(1)
    response = client.post("/admin/enrol", data={"code": code(secret), "csrf_token": token(page)})
    assert response.status_code == 200, response.get_data(as_text=True)
    return secret, CODES_RE.findall(response.get_data(as_text=True))


def signed_in_owner(app, email=OWNER):
    """A test client signed in as an enrolled owner: (client, secret, recovery codes)."""
    make_operator(app, email)
    client = app.test_client()
    assert password_step(client, email).status_code == 302
    secret, codes = enrol(client)
    return client, secret, codes


def signed_in_support(app, email=SUPPORT):
    make_operator(app, email, "support")
    client = app.test_client()
    assert password_step(client, email).headers["Location"] == "/admin/"
    return client
