"""The partner dashboard at /profile/ through the Flask test client: sign-in and its errors
(CSRF, wrong password, banned; throttling in test_login_throttle.py), API access requests approved from the CLI, the
one-time key reveal, rotate, revoke, the examples and the catalog at the partner's rates."""
import html
import json
import logging
import re
import shutil
import subprocess
import sys

import pytest
import requests
from freezegun import freeze_time
from sqlalchemy import select

from serva import accounts, db, keys, ledger, services
from serva.auth import flush_key_uses
from serva.money import parse_amount
from serva.schema import api_keys, login_failures
from serva.cli import cli as serva_cli

EMAIL = "partner@example.com"
PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
RAW_KEY_RE = re.compile(r'<code id="raw-key">([^<]+)</code>')


# ---------------------------------------------------------------- helpers

def make_account(app, email=EMAIL, approved=True, balance="25.5", password=PASSWORD, key=False):
    """An account that signs in with a password; with an active key only when asked."""
    with app.app_context(), db.write() as conn:
        account_id = accounts.create(conn, email, password, approved=approved)
        if parse_amount(balance):
            ledger.post(conn, account_id, parse_amount(balance), "topup", "test top-up")
        raw = keys.create_key(conn, account_id) if key else None
    return account_id, raw


def csrf_token(client, path="/profile/api/"):
    return CSRF_RE.search(client.get(path).text).group(1)


def sign_in(client, email=EMAIL, password=PASSWORD, addr="127.0.0.1"):
    token = csrf_token(client, "/profile/login")
    return client.post("/profile/login", data={"email": email, "password": password,
                                               "csrf_token": token},
                       environ_base={"REMOTE_ADDR": addr})


def post(client, path, **data):
    """A dashboard form POST with the CSRF token of the rendered page."""
    return client.post(path, data={"csrf_token": csrf_token(client), **data})


def call_api(client, key, action="balance", **params):
    response = client.post("/api/v1", data={"action": action, "key": key, **params})
    assert response.status_code == 200
    return response.get_json()


def signed_in(client) -> bool:
    return client.get("/profile/api/").status_code == 200


def key_rows(app, account_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(api_keys).where(api_keys.c.account_id == account_id)
                            .order_by(api_keys.c.id)).all()


def revealed_key(response):
    match = RAW_KEY_RE.search(response.text)
    return match.group(1) if match else None


@pytest.fixture
def account(app):
    return make_account(app)[0]


@pytest.fixture
def signed(client, account):
    """A client signed in as an approved partner without a key."""
    assert sign_in(client).status_code == 302
    return client


# ---------------------------------------------------------------- sign-in

def test_dashboard_redirects_to_sign_in_when_signed_out(client):
    response = client.get("/profile/api/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/profile/login")
    assert client.get("/profile/").headers["Location"] == "/profile/api/"


def test_sign_in_page_has_a_form_with_a_csrf_token(client):
    page = client.get("/profile/login")
    assert page.status_code == 200
    assert 'type="password"' in page.text and CSRF_RE.search(page.text)


def test_sign_in_and_sign_out(client, account):
    response = sign_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/profile/api/"
    page = client.get("/profile/api/")
    assert page.status_code == 200 and EMAIL in page.text
    assert client.get("/profile/login").headers["Location"] == "/profile/api/"

    assert client.get("/profile/logout").status_code == 405  # signing out is a POST with a token
    response = post(client, "/profile/logout")
    assert response.status_code == 302 and response.headers["Location"] == "/profile/login"
    assert not signed_in(client)


def test_email_is_case_insensitive(client, account):
    assert sign_in(client, email="  Partner@Example.COM ").status_code == 302
    assert signed_in(client)


@pytest.mark.parametrize("email, password", [(EMAIL, "wrong password"),
                                             ("nobody@example.com", PASSWORD),
                                             (EMAIL, "")])
def test_wrong_password_or_unknown_email_is_refused_the_same_way(app, client, account, email,
                                                                  password):
    response = sign_in(client, email=email, password=password)
    assert response.status_code == 200
    assert "Wrong email or password." in response.text
    assert not signed_in(client)
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(login_failures.c.email)).scalars().all() == [email]


def test_account_without_password_cannot_sign_in(app, client):
    make_account(app, password=None)
    assert "Wrong email or password." in sign_in(client, password="").text
    assert not signed_in(client)


def test_session_cookie_is_httponly_and_samesite_lax(app, client, account):
    cookie = sign_in(client).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    post(client, "/profile/logout")
    app.config["SESSION_COOKIE_SECURE"] = True
    cookie = sign_in(client).headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_sign_in_without_csrf_token_is_refused(client, account):
    response = client.post("/profile/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert "security token" in response.text
    assert not signed_in(client)


def test_sign_in_with_a_forged_csrf_token_is_refused(client, account):
    client.get("/profile/login")
    response = client.post("/profile/login", data={"email": EMAIL, "password": PASSWORD,
                                                   "csrf_token": "forged"})
    assert response.status_code == 400
    assert not signed_in(client)


def test_forms_without_csrf_token_change_nothing(app, signed, account):
    for path in ("/profile/api/key", "/profile/api/request-access", "/profile/logout",
                 "/profile/logout-everywhere", "/profile/password"):
        assert signed.post(path, data={"confirm": "yes", "current_password": PASSWORD,
                                       "new_password": "changed password",
                                       "confirm_password": "changed password"}).status_code == 400
    assert key_rows(app, account) == []
    assert signed_in(signed)


def test_the_json_api_needs_no_csrf_token_even_with_a_session(app, client):
    account_id, raw = make_account(app, key=True)
    assert sign_in(client).status_code == 302
    assert call_api(client, raw) == {"balance": "25.5", "currency": "USD"}


# ---------------------------------------------------------------- bans

def test_banned_account_cannot_sign_in_and_is_told_why(app, client, runner, account):
    result = runner.invoke(serva_cli, args=["account", "ban", EMAIL, "--reason", "chargebacks <fraud>"])
    assert result.exit_code == 0
    response = sign_in(client)
    assert response.status_code == 403
    assert "This account is banned: chargebacks &lt;fraud&gt;" in response.text
    assert not signed_in(client)


def test_ban_reason_is_not_shown_for_a_wrong_password(client, runner, account):
    runner.invoke(serva_cli, args=["account", "ban", EMAIL, "--reason", "chargebacks"])
    response = sign_in(client, password="wrong password")
    assert "Wrong email or password." in response.text and "chargebacks" not in response.text


def test_banned_without_reason(client, runner, account):
    runner.invoke(serva_cli, args=["account", "ban", EMAIL])
    assert "This account is banned." in sign_in(client).text


def test_partner_banned_while_signed_in_is_signed_out_on_next_request(app, signed, runner, account):
    runner.invoke(serva_cli, args=["account", "ban", EMAIL, "--reason", "chargebacks"])
    response = signed.get("/profile/api/")
    assert response.status_code == 302 and response.headers["Location"] == "/profile/login"
    assert "This account is banned: chargebacks" in signed.get("/profile/login").text
    runner.invoke(serva_cli, args=["account", "unban", EMAIL])
    assert not signed_in(signed)  # the session is gone, not just hidden


def test_banned_partner_cannot_create_a_key_with_an_open_page(app, signed, runner, account):
    token = csrf_token(signed)
    runner.invoke(serva_cli, args=["account", "ban", EMAIL])
    response = signed.post("/profile/api/key", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/profile/login"
    assert key_rows(app, account) == []


# ---------------------------------------------------------------- API access

def test_unapproved_partner_requests_access_and_the_operator_approves_it(app, client, runner):
    account_id, _ = make_account(app, approved=False)
    sign_in(client)
    page = client.get("/profile/api/").text
    assert "Not requested" in page and "Request API access" in page
    assert "Create key" not in page
    assert runner.invoke(serva_cli, args=["account", "requests"]).output == "none\n"

    response = post(client, "/profile/api/request-access")
    assert response.status_code == 302
    page = client.get("/profile/api/").text
    assert "Pending approval" in page and "API access requested" in page
    assert "Request API access" not in page and "Create key" not in page
    assert EMAIL in runner.invoke(serva_cli, args=["account", "requests"]).output

    post(client, "/profile/api/request-access")
    assert "already waiting" in client.get("/profile/api/").text

    assert runner.invoke(serva_cli, args=["account", "approve", EMAIL]).exit_code == 0
    page = client.get("/profile/api/").text
    assert "Approved" in page and "Create key" in page
    assert runner.invoke(serva_cli, args=["account", "requests"]).output == "none\n"
    raw = revealed_key(post(client, "/profile/api/key"))
    assert raw and call_api(client, raw)["balance"] == "25.5"


def test_unapproved_partner_cannot_create_a_key(app, client):
    account_id, _ = make_account(app, approved=False)
    sign_in(client)
    response = post(client, "/profile/api/key")
    assert response.status_code == 302
    assert "not approved" in client.get("/profile/api/").text
    assert key_rows(app, account_id) == []


def test_unapproved_partner_with_a_key_is_warned_and_may_only_revoke_it(app, client, runner):
    account_id, raw = make_account(app, key=True)
    runner.invoke(serva_cli, args=["account", "unapprove", EMAIL])
    sign_in(client)
    page = client.get("/profile/api/").text
    assert "api_access_not_approved" in page and "Revoke key" in page and "Rotate key" not in page
    assert call_api(client, raw)["code"] == "api_access_not_approved"
    post(client, "/profile/api/key/rotate", confirm="yes")
    assert len(key_rows(app, account_id)) == 1
    post(client, "/profile/api/key/revoke", confirm="yes")
    assert call_api(client, raw)["code"] == "key_revoked"


def test_request_access_when_already_approved(signed):
    post(signed, "/profile/api/request-access")
    assert "already approved" in signed.get("/profile/api/").text


# ---------------------------------------------------------------- keys

def test_no_key_shows_create(signed):
    page = signed.get("/profile/api/").text
    assert "No active key." in page and "Create key" in page
    assert "Rotate key" not in page and "Revoke key" not in page


def test_create_key_reveals_it_once(app, signed, account):
    response = post(signed, "/profile/api/key")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    raw = revealed_key(response)
    assert keys.looks_like_key(raw)
    assert 'data-copy="raw-key"' in response.text
    assert 'data-replace-url="/profile/api/"' in response.text  # a reload becomes a GET

    assert call_api(signed, raw) == {"balance": "25.5", "currency": "USD"}

    again = signed.get("/profile/api/")
    assert again.headers["Cache-Control"] == "no-store"
    assert raw not in again.text and revealed_key(again) is None
    assert f"{raw[:keys.DISPLAY_PREFIX_LENGTH]}…" in again.text
    assert "Rotate key" in again.text and "Revoke key" in again.text
    assert "Create key" not in again.text


def test_the_raw_key_is_stored_nowhere(app, signed, account, caplog):
    caplog.set_level(logging.DEBUG)
    raw = revealed_key(post(signed, "/profile/api/key"))
    call_api(signed, raw)
    (row,) = key_rows(app, account)
    assert raw not in json.dumps(list(row._mapping.values()))
    assert row.key_hash == keys.hash_key(raw)
    session = app.session_interface.get_signing_serializer(app).loads(
        signed.get_cookie("session").value)
    assert raw not in json.dumps(session)
    assert raw not in caplog.text


def test_key_metadata_shows_created_and_last_used(app, client, account):
    with freeze_time("2030-01-02 03:04:05"):
        sign_in(client)
        raw = revealed_key(post(client, "/profile/api/key"))
        page = client.get("/profile/api/").text
        assert "Created</dt><dd>2030-01-02 03:04 UTC" in page
        assert "Last used</dt><dd>never" in page
    with freeze_time("2030-01-03 08:09:10"):
        call_api(client, raw)
        flush_key_uses(app)  # written off the request path
        assert "Last used</dt><dd>2030-01-03 08:09 UTC" in client.get("/profile/api/").text


def test_create_refuses_when_a_key_is_active(app, signed, account):
    raw = revealed_key(post(signed, "/profile/api/key"))
    response = post(signed, "/profile/api/key")
    assert response.status_code == 302
    assert "already have an active key" in signed.get("/profile/api/").text
    assert len(key_rows(app, account)) == 1
    assert call_api(signed, raw)["balance"] == "25.5"


def test_rotate_needs_confirmation(app, signed, account):
    raw = revealed_key(post(signed, "/profile/api/key"))
    response = post(signed, "/profile/api/key/rotate")
    assert response.status_code == 302
    assert "Tick the confirmation" in signed.get("/profile/api/").text
    assert len(key_rows(app, account)) == 1
    assert call_api(signed, raw)["balance"] == "25.5"


def test_rotate_reveals_a_new_key_and_revokes_the_old(app, signed, account):
    old = revealed_key(post(signed, "/profile/api/key"))
    response = post(signed, "/profile/api/key/rotate", confirm="yes")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    new = revealed_key(response)
    assert keys.looks_like_key(new) and new != old
    assert call_api(signed, old) == {"error": "API key has been revoked", "code": "key_revoked"}
    assert call_api(signed, new)["balance"] == "25.5"
    assert new not in signed.get("/profile/api/").text


def test_rotate_without_a_key_is_refused(app, signed, account):
    post(signed, "/profile/api/key/rotate", confirm="yes")
    assert "no active key to rotate" in signed.get("/profile/api/").text
    assert key_rows(app, account) == []


def test_revoke_needs_confirmation_then_the_api_answers_key_revoked(app, signed, account):
    raw = revealed_key(post(signed, "/profile/api/key"))
    post(signed, "/profile/api/key/revoke")
    assert "Tick the confirmation" in signed.get("/profile/api/").text
    assert call_api(signed, raw)["balance"] == "25.5"

    response = post(signed, "/profile/api/key/revoke", confirm="yes")
    assert response.status_code == 302
    page = signed.get("/profile/api/").text
    assert "The key is revoked" in page and "No active key." in page and "Create key" in page
    assert call_api(signed, raw) == {"error": "API key has been revoked", "code": "key_revoked"}

    new = revealed_key(post(signed, "/profile/api/key"))  # a revoked key does not block a new one
    assert call_api(signed, new)["balance"] == "25.5"


def test_revoke_without_a_key_is_refused(signed):
    post(signed, "/profile/api/key/revoke", confirm="yes")
    assert "no active key to revoke" in signed.get("/profile/api/").text


def test_key_revoked_from_the_cli_disappears_from_the_dashboard(signed, runner):
    post(signed, "/profile/api/key")
    runner.invoke(serva_cli, args=["key", "revoke", EMAIL])
    assert "No active key." in signed.get("/profile/api/").text


def test_signed_out_forms_redirect_to_sign_in(app, client, account):
    token = csrf_token(client, "/profile/login")
    for path in ("/profile/api/key", "/profile/api/key/rotate", "/profile/api/key/revoke",
                 "/profile/api/request-access"):
        response = client.post(path, data={"csrf_token": token, "confirm": "yes"})
        assert response.status_code == 302 and response.headers["Location"].startswith("/profile/login")
    assert key_rows(app, account) == []


# ---------------------------------------------------------------- balance, catalog, examples

@pytest.fixture
def priced_catalog(app, account):
    """Three services: one at the list rate less the discount, one at a custom rate, one inactive."""
    with app.app_context(), db.write() as conn:
        services.add(conn, id=1234, name="Instagram Followers", category="Instagram",
                     rate=890_000, min_quantity=100, max_quantity=100_000)
        services.add(conn, id=1235, name="<script>alert(1)</script>", category="YouTube",
                     kind="package", rate=15_000_000)
        services.add(conn, id=1300, name="Retired", rate=1_000_000, active=False)
        accounts.set_discount(conn, account, 1000)
        accounts.set_custom_rate(conn, account, 1235, 12_500_000)


def test_catalog_shows_the_partners_effective_rates(app, signed, priced_catalog):
    raw = revealed_key(post(signed, "/profile/api/key"))
    page = signed.get("/profile/api/").text
    shown = re.findall(r'<td class="num rate">([^ ]+) USD</td>', page)
    assert shown == [entry["rate"] for entry in call_api(signed, raw, "services")]
    assert shown == ["0.801", "12.5"]
    assert "Retired" not in page


def test_service_names_are_escaped(signed, priced_catalog):
    page = signed.get("/profile/api/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page


def test_balance_is_shown(signed):
    assert '<p class="balance" id="balance">25.5 USD</p>' in signed.get("/profile/api/").text


def test_empty_catalog(signed):
    assert "No services are available yet." in signed.get("/profile/api/").text


def test_examples_use_this_servers_url_and_cover_every_action(signed, priced_catalog):
    page = signed.get("/profile/api/").text
    assert page.count("http://localhost/api/v1") >= 5  # the endpoint box and four examples
    for snippet in ("example-curl", "example-js", "example-php", "example-python"):
        code = html.unescape(re.search(rf'<code id="{snippet}">(.*?)</code>', page, re.S).group(1))
        assert "YOUR_API_KEY" in code
        for action in ("balance", "services", "add", "status"):
            assert action in code
        assert "1234" in code and "100" in code  # the partner's own first link service


def test_reveal_page_fills_the_examples_with_the_new_key(signed):
    response = post(signed, "/profile/api/key")
    raw = revealed_key(response)
    assert response.text.count(raw) == 5 and "YOUR_API_KEY" not in response.text
    assert "YOUR_API_KEY" in signed.get("/profile/api/").text


def test_the_status_example_asks_for_two_different_orders(signed):
    """A batch of one id twice answers one entry: the example would teach nothing."""
    code = html.unescape(re.search(r'<code id="example-curl">(.*?)</code>',
                                   signed.get("/profile/api/").text, re.S).group(1))
    batch = re.search(r"orders=(\S+?)\)", code).group(1).split(",")
    assert len(batch) == 2 and len(set(batch)) == 2, batch


def test_every_html_id_of_the_dashboard_is_unique(signed, priced_catalog):
    """The copy buttons find their text by id: a repeated id copies the wrong snippet."""
    pages = {"no key": signed.get("/profile/api/").text,
             "reveal": post(signed, "/profile/api/key").text,
             "a key": signed.get("/profile/api/").text}
    for state, page in pages.items():
        ids = re.findall(r'\sid="([^"]*)"', page)
        assert ids and len(ids) == len(set(ids)), (state, sorted({i for i in ids if ids.count(i) > 1}))
        for target in re.findall(r'data-copy="([^"]*)"', page):
            assert target in ids, (state, target)


def test_examples_run_as_pasted(app, live_server, priced_catalog, tmp_path):
    """The Python, curl and JavaScript snippets of the reveal page work against a real server."""
    session = requests.Session()
    login = session.get(f"{live_server}/profile/login")
    session.post(f"{live_server}/profile/login",
                 data={"email": EMAIL, "password": PASSWORD,
                       "csrf_token": CSRF_RE.search(login.text).group(1)})
    page = session.get(f"{live_server}/profile/api/")
    reveal = session.post(f"{live_server}/profile/api/key",
                          data={"csrf_token": CSRF_RE.search(page.text).group(1)})
    snippets = {name: html.unescape(re.search(rf'<code id="example-{name}">(.*?)</code>',
                                              reveal.text, re.S).group(1))
                for name in ("python", "curl", "js")}
    assert f"{live_server}/api/v1" in snippets["python"]
    runs = {"python": [sys.executable, "-c", snippets["python"]]}
    if shutil.which("curl"):
        runs["curl"] = ["bash", "-c", snippets["curl"]]
    if shutil.which("node"):
        script = tmp_path / "serva.mjs"
        script.write_text(snippets["js"])
        runs["js"] = ["node", str(script)]
    outputs = {}
    for name, command in runs.items():
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
        outputs[name] = output
        assert re.search(r"balance['\"]?: ?['\"]", output), (name, output)
        assert "Instagram Followers" in output, (name, output)  # services
        # add: the first snippet places the order, the others repeat it and meet the guard
        assert re.search(r"ORD-1000\d\d|duplicate_target", output), (name, output)
        assert "Incorrect order ID" in output  # the sample status asks for an order of nobody
        assert "_key" not in output, (name, output)  # no missing/invalid/revoked key
    assert re.search(r"order['\"]?: ?['\"]ORD-100001['\"]", outputs["python"])
