"""The console's locks: every route refuses an anonymous request, every POST needs its CSRF
token, the partner's and the operator's cookies each open only their own side, the second
factor cannot be skipped, codes and recovery codes work once, sessions end when idle and on
sign-out, and every page carries the security headers."""
import time

import pytest
from freezegun import freeze_time
from werkzeug.routing import Rule

from serva import db, operators

from console_support import (OWNER, PASSWORD, SUPPORT, code, csrf, enrol, make_operator,
                             password_step, post, signed_in_owner, signed_in_support, token)
from test_dashboard import EMAIL as PARTNER, PASSWORD as PARTNER_PASSWORD, make_account

SAMPLE_VALUES = {"account_id": "1", "service_id": "1", "order": "ORD-100001", "refill": "1",
                 "name": "up", "change": "enable", "code": "SAVE", "payment": "PAY-1"}


def console_routes(app):
    """(method, path) of every console route, its variables filled in."""
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", SAMPLE_VALUES[name]).replace(
                f"<int:{name}>", SAMPLE_VALUES[name])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method, path


def test_every_console_route_refuses_an_anonymous_request(app, client):
    seen = 0
    for rule, method, path in console_routes(app):
        response = client.open(path, method=method,
                               data={"csrf_token": csrf(client)} if method == "POST" else None)
        seen += 1
        if rule.endpoint == "console.login":
            continue  # the sign-in form itself
        assert response.status_code in (302, 401), (method, path, response.status_code)
        if response.status_code == 302:
            assert response.headers["Location"].startswith("/admin/login")
        assert "csrf_token" not in response.get_data(as_text=True) or response.status_code == 401
    assert seen > 40


def test_every_post_without_its_csrf_token_is_refused(app):
    client, _, _ = signed_in_owner(app)
    for rule, method, path in console_routes(app):
        if method == "POST":
            response = client.post(path, data={"amount": "5", "note": "x"})
            assert response.status_code == 400, path
            assert "security token" in response.get_data(as_text=True)


def test_a_partner_cookie_never_opens_the_console(app, client):
    make_account(app)
    page = client.get("/profile/login").get_data(as_text=True)
    client.post("/profile/login", data={"email": PARTNER, "password": PARTNER_PASSWORD,
                                        "csrf_token": token(page)})
    assert client.get("/profile/api/").status_code == 200
    response = client.get("/admin/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login")
    # The partner's cookie value under the console's cookie name: not the console's salt.
    partner_cookie = client.get_cookie("session")
    client.set_cookie("serva_admin", partner_cookie.value, path="/admin")
    assert client.get("/admin/").status_code == 302


def test_an_operator_cookie_never_opens_the_dashboard(app):
    client = signed_in_support(app)
    assert client.get("/admin/").status_code == 200
    cookie = client.get_cookie("serva_admin", path="/admin")
    assert cookie.path == "/admin" and cookie.http_only and cookie.same_site == "Strict"
    response = client.get("/profile/api/")
    assert response.status_code == 302 and "/profile/login" in response.headers["Location"]
    client.set_cookie("session", cookie.value)  # the console's value as the partner's cookie
    assert client.get("/profile/api/").status_code == 302


def test_the_second_factor_cannot_be_skipped(app, client):
    make_operator(app)
    assert password_step(client).headers["Location"] == "/admin/enrol"
    for path in ("/admin/", "/admin/accounts", "/admin/orders", "/admin/activity"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/admin/enrol"
    response = post(client, "/admin/audit", page="/admin/enrol")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/enrol"
    secret, _ = enrol(client)
    assert client.get("/admin/").status_code == 200
    # The next sign-in asks for a code; pages stay shut until it is given.
    other = app.test_client()
    assert password_step(other).headers["Location"] == "/admin/second-factor"
    assert other.get("/admin/orders").headers["Location"] == "/admin/second-factor"
    assert other.get("/admin/enrol").headers["Location"] == "/admin/second-factor"
    wrong = post(other, "/admin/second-factor", {"code": "000000"}, page="/admin/second-factor")
    assert wrong.status_code == 400
    right = post(other, "/admin/second-factor", {"code": code(secret, 1)}, page="/admin/second-factor")
    assert right.headers["Location"] == "/admin/"
    assert other.get("/admin/orders").status_code == 200


def test_a_code_works_once(app):
    _, secret, _ = signed_in_owner(app)
    first, second = app.test_client(), app.test_client()
    password_step(first), password_step(second)
    used = code(secret, 1)
    assert post(first, "/admin/second-factor", {"code": used}, page="/admin/second-factor").status_code == 302
    assert post(second, "/admin/second-factor", {"code": used}, page="/admin/second-factor").status_code == 400


def test_recovery_codes_work_once(app):
    _, _, codes = signed_in_owner(app)
    assert len(codes) == 10 and len(set(codes)) == 10
    first = app.test_client()
    password_step(first)
    assert post(first, "/admin/second-factor", {"code": codes[0].upper()},
                page="/admin/second-factor").headers["Location"] == "/admin/"
    again = app.test_client()
    password_step(again)
    assert post(again, "/admin/second-factor", {"code": codes[0]},
                page="/admin/second-factor").status_code == 400
    assert post(again, "/admin/second-factor", {"code": codes[1]},
                page="/admin/second-factor").status_code == 302


def test_recovery_codes_are_stored_hashed(app):
    _, _, codes = signed_in_owner(app)
    from serva.schema import recovery_codes
    with app.app_context(), db.read() as conn:
        stored = [row.code_hash for row in conn.execute(recovery_codes.select())]
    assert len(stored) == 10 and not set(codes) & set(stored)
    assert not any(c.replace("-", "") in h for c in codes for h in stored)


def test_sessions_end_after_30_idle_minutes_and_on_sign_out(app):
    with freeze_time("2026-12-07 10:00:00") as clock:
        client = signed_in_support(app)
        clock.tick(29 * 60)
        assert client.get("/admin/").status_code == 200  # activity keeps it alive
        clock.tick(29 * 60)
        assert client.get("/admin/").status_code == 200
        clock.tick(31 * 60)
        assert client.get("/admin/").headers["Location"].startswith("/admin/login")
    client = signed_in_support(app, "other@example.com")
    cookie = client.get_cookie("serva_admin", path="/admin").value
    assert post(client, "/admin/logout", page="/admin/").headers["Location"] == "/admin/login"
    copy = app.test_client()
    copy.set_cookie("serva_admin", cookie, path="/admin")
    assert copy.get("/admin/").status_code == 302  # the server-side row is revoked


def test_a_disabled_operator_is_signed_out_and_cannot_sign_in(app, runner):
    client = signed_in_support(app)
    from serva.cli import cli as serva_cli
    assert runner.invoke(serva_cli, ["operator", "disable", SUPPORT]).exit_code == 0
    assert client.get("/admin/").status_code == 302
    response = password_step(app.test_client(), SUPPORT)
    assert response.status_code == 403 and "disabled" in response.get_data(as_text=True)


def test_wrong_passwords_are_throttled(app, client):
    make_operator(app)
    app.config["LOGIN_MAX_FAILURES"] = 2
    for _ in range(2):
        assert password_step(client, OWNER, "wrong-password").status_code == 200
    response = password_step(client, OWNER, PASSWORD)
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_security_headers_on_every_page(app, client):
    owner, _, _ = signed_in_owner(app)
    for path in ("/admin/login", "/admin/", "/admin/orders", "/admin/accounts"):
        response = (owner if path != "/admin/login" else client).get(path)
        assert response.status_code == 200
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert "<script>" not in response.get_data(as_text=True)
