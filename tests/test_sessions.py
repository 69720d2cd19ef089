"""Dashboard sessions end for good: a copied cookie dies with the sign-out it was copied
before; "sign out everywhere" ends every client; rotating the key or changing the password
ends every other session and keeps the current one."""
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from serva import accounts, db
from serva.schema import dashboard_sessions
from serva.cli import cli as serva_cli

from test_dashboard import (EMAIL, PASSWORD, csrf_token, key_rows, make_account, post,
                            revealed_key, sign_in, signed_in)


def copy_of(app, client):
    """Another browser holding a copy of `client`'s session cookie (as a thief would)."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def second_sign_in(app, password=PASSWORD):
    other = app.test_client()
    assert sign_in(other, password=password).status_code == 302
    return other


def session_rows(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(dashboard_sessions).order_by(dashboard_sessions.c.id)).all()


@pytest.fixture
def keyed(app, client):
    """A signed-in client of an approved partner with an active key."""
    account_id, _ = make_account(app, key=True)
    assert sign_in(client).status_code == 302
    return client, account_id


def test_a_session_is_a_server_side_row_holding_only_a_hash(app, client):
    make_account(app)
    sign_in(client)
    (row,) = session_rows(app)
    assert row.revoked_at is None and len(row.token_hash) == 64
    cookie = app.session_interface.get_signing_serializer(app).loads(
        client.get_cookie("session").value)
    assert cookie["_user_id"] != str(row.account_id)  # a random token, not the account id
    assert row.token_hash not in cookie["_user_id"]


def test_a_copied_cookie_is_refused_after_sign_out(app, keyed):
    client, account_id = keyed
    thief = copy_of(app, client)
    assert signed_in(thief)
    stale_token = csrf_token(thief)

    assert post(client, "/profile/logout").status_code == 302
    assert not signed_in(client)

    assert not signed_in(thief)
    for path in ("/profile/api/key/rotate", "/profile/api/key/revoke", "/profile/api/key",
                 "/profile/password", "/profile/logout-everywhere"):
        response = thief.post(path, data={"csrf_token": stale_token, "confirm": "yes",
                                          "current_password": PASSWORD,
                                          "new_password": "stolen account",
                                          "confirm_password": "stolen account"})
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/profile/login"), path
        assert revealed_key(response) is None
    (key,) = key_rows(app, account_id)
    assert key.revoked_at is None  # neither rotated nor revoked
    assert sign_in(app.test_client()).status_code == 302  # the password was not changed
    assert session_rows(app)[0].revoked_at is not None


def test_an_account_id_cookie_from_before_server_side_sessions_is_refused(app, client):
    """Cookies signed before this change carried the account id: they no longer sign in."""
    account_id, _ = make_account(app)
    forged = app.session_interface.get_signing_serializer(app).dumps(
        {"_user_id": str(account_id), "_fresh": True})
    client.set_cookie("session", forged)
    assert not signed_in(client)


def test_sign_out_everywhere_ends_every_session(app, keyed):
    client, _ = keyed
    phone = second_sign_in(app)
    thief = copy_of(app, phone)
    assert "Signed in here and in 1 other session." in client.get("/profile/api/").text

    assert client.post("/profile/logout-everywhere").status_code == 400  # CSRF token required
    assert signed_in(phone)

    response = post(client, "/profile/logout-everywhere")
    assert response.status_code == 302 and response.headers["Location"] == "/profile/login"
    assert "signed out on every device" in client.get("/profile/login").text
    assert not signed_in(client) and not signed_in(phone) and not signed_in(thief)
    assert all(row.revoked_at is not None for row in session_rows(app))
    assert signed_in(second_sign_in(app))  # signing in again works


def test_sign_out_ends_only_its_own_session(app, keyed):
    client, _ = keyed
    phone = second_sign_in(app)
    post(client, "/profile/logout")
    assert not signed_in(client) and signed_in(phone)
    assert "Signed in only here." in phone.get("/profile/api/").text


def test_rotating_the_key_ends_the_other_sessions_but_not_this_one(app, keyed):
    client, account_id = keyed
    phone = second_sign_in(app)
    thief = copy_of(app, phone)
    response = post(client, "/profile/api/key/rotate", confirm="yes")
    assert keys_active(app, account_id) == 1 and revealed_key(response)
    assert "1 other session was signed out." in response.text
    assert signed_in(client)
    assert not signed_in(phone) and not signed_in(thief)


def test_creating_or_a_refused_rotation_keeps_the_other_sessions(app, client):
    make_account(app)
    sign_in(client)
    phone = second_sign_in(app)
    post(client, "/profile/api/key/rotate")  # unconfirmed: nothing happens
    assert revealed_key(post(client, "/profile/api/key"))  # a first key is no rotation
    assert signed_in(phone)


def keys_active(app, account_id):
    return sum(row.revoked_at is None for row in key_rows(app, account_id))


def change(client, current=PASSWORD, new="a new passphrase", confirm=None):
    return post(client, "/profile/password", current_password=current, new_password=new,
                confirm_password=new if confirm is None else confirm)


def test_changing_the_password_ends_the_other_sessions_but_not_this_one(app, keyed):
    client, _ = keyed
    phone = second_sign_in(app)
    thief = copy_of(app, phone)
    response = change(client)
    assert response.status_code == 302 and response.headers["Location"] == "/profile/api/"
    page = client.get("/profile/api/").text
    assert "Password changed. 1 other session was signed out." in page
    assert not signed_in(phone) and not signed_in(thief)
    assert signed_in(client)
    assert "Wrong email or password." in sign_in(app.test_client()).text
    assert signed_in(second_sign_in(app, password="a new passphrase"))


@pytest.mark.parametrize("current, new, confirm, message", [
    ("wrong password", "a new passphrase", None, "The current password is wrong."),
    (PASSWORD, "short", None, "at least 8 characters"),
    (PASSWORD, "a new passphrase", "another passphrase", "differ"),
])
def test_a_refused_password_change_changes_nothing(app, keyed, current, new, confirm, message):
    client, _ = keyed
    phone = second_sign_in(app)
    response = change(client, current, new, confirm)
    assert response.status_code == 302
    assert message in client.get("/profile/api/").text
    assert signed_in(phone) and signed_in(client)
    assert sign_in(app.test_client()).status_code == 302  # the old password still works


def test_wrong_current_passwords_are_throttled_like_sign_in(app, client):
    make_account(app)
    limit = app.config["LOGIN_MAX_FAILURES"]
    with freeze_time("2030-01-01 12:00:00"):
        sign_in(client)
        for _ in range(limit):
            change(client, current="wrong password")
        change(client)  # the right one, but too soon
        assert "Too many failed sign-in attempts" in client.get("/profile/api/").text
    with app.app_context(), db.read() as conn:
        assert accounts.check_password(accounts.get_by_email(conn, EMAIL), PASSWORD)


def test_sessions_expire_with_the_cookie_lifetime(app, client):
    make_account(app)
    lifetime = app.permanent_session_lifetime
    with freeze_time("2030-01-01 12:00:00") as clock:
        sign_in(client)
        clock.tick(lifetime - timedelta(seconds=1))
        assert signed_in(client)
        clock.tick(timedelta(seconds=1))
        assert not signed_in(client)


def test_a_ban_ends_the_session_row(app, keyed, runner):
    client, _ = keyed
    thief = copy_of(app, client)
    runner.invoke(serva_cli, args=["account", "ban", EMAIL])
    client.get("/profile/api/")
    runner.invoke(serva_cli, args=["account", "unban", EMAIL])
    assert not signed_in(client) and not signed_in(thief)


def test_cli_password_and_sign_out_end_every_session(app, keyed, runner):
    client, _ = keyed
    result = runner.invoke(serva_cli, args=["account", "password", EMAIL],
                           input="operator set this\noperator set this\n")
    assert result.exit_code == 0, result.output
    assert "partner@example.com: password set, 1 session signed out" in result.output
    assert not signed_in(client)
    assert "Wrong email or password." in sign_in(client).text
    assert sign_in(client, password="operator set this").status_code == 302

    result = runner.invoke(serva_cli, args=["account", "sign-out", EMAIL])
    assert result.output == "partner@example.com: 1 session signed out\n"
    assert not signed_in(client)
    result = runner.invoke(serva_cli, args=["account", "password", EMAIL, "--password", "short"])
    assert result.exit_code == 2


def test_prune_deletes_ended_sessions(app, keyed, runner):
    client, _ = keyed
    phone = second_sign_in(app)
    post(phone, "/profile/logout")
    assert "1 ended sessions" in runner.invoke(serva_cli, args=["prune"]).output
    assert len(session_rows(app)) == 1 and signed_in(client)
    with freeze_time(timedelta(days=40)):
        assert "1 ended sessions" in runner.invoke(serva_cli, args=["prune"]).output
    assert session_rows(app) == []
