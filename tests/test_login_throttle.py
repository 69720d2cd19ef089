"""Fair sign-in throttling (serva/login_throttle.py): failures slow down the email+address
(or email+trusted browser) they come from, with a growing wait; spraying slows down the
address; the owner from another address, or from a browser that signed in before, is never
held up by someone else's failures."""
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from freezegun import freeze_time
from sqlalchemy import insert, select

from serva import db, login_throttle
from serva.schema import login_failures

from test_dashboard import CSRF_RE, EMAIL, PASSWORD, make_account, post, sign_in, signed_in

ATTACKER, OWNER = "203.0.113.7", "198.51.100.20"
WRONG = "not the password"


@pytest.fixture
def clock():
    with freeze_time("2030-01-01 12:00:00") as frozen:
        yield frozen


@pytest.fixture
def account(app):
    return make_account(app)[0]


def attempt(app, email=EMAIL, password=WRONG, addr=ATTACKER, client=None):
    return sign_in(client or app.test_client(), email=email, password=password, addr=addr)


def wait_of(response) -> int:
    assert response.status_code == 429, response.status_code
    assert "Too many failed sign-in attempts. Try again in" in response.text
    return int(response.headers["Retry-After"])


def trusted_browser(app, email=EMAIL, addr=OWNER):
    """A browser that has signed in to `email` once (it holds the device cookie), signed out."""
    browser = app.test_client()
    assert sign_in(browser, email=email, addr=addr).status_code == 302
    assert browser.get_cookie(login_throttle.DEVICE_COOKIE, path="/profile") is not None
    post(browser, "/profile/logout")
    return browser


def test_failures_of_an_email_from_one_address_back_off_with_a_growing_wait(app, account, clock):
    limit = app.config["LOGIN_MAX_FAILURES"]
    base = app.config["LOGIN_BACKOFF_SECONDS"]
    for _ in range(limit):
        assert "Wrong email or password." in attempt(app).text
    refused = attempt(app, password=PASSWORD)  # even the right password waits here
    assert wait_of(refused) == base
    assert f"Try again in {base} seconds." in refused.text
    for expected in (base, 2 * base, 4 * base, 8 * base):
        clock.tick(timedelta(seconds=expected - 1))
        assert wait_of(attempt(app)) == 1  # refused attempts neither count nor extend the wait
        clock.tick(timedelta(seconds=1))
        assert "Wrong email or password." in attempt(app).text  # checked, and counted
        assert wait_of(attempt(app)) == 2 * expected
    clock.tick(timedelta(seconds=16 * base))
    client = app.test_client()
    assert attempt(app, password=PASSWORD, client=client).status_code == 302  # never a lock
    assert signed_in(client)
    assert "Wrong email or password." in attempt(app).text  # the success cleared the count


def test_the_wait_is_never_longer_than_the_window(app, account, clock):
    window = app.config["LOGIN_FAILURE_WINDOW_SECONDS"]
    with app.app_context(), db.write() as conn:
        conn.execute(insert(login_failures), [
            {"email": EMAIL, "remote_addr": ATTACKER, "created_at": db.now()}] * 60)
    assert wait_of(attempt(app, password=PASSWORD)) == window
    clock.tick(timedelta(seconds=window))
    assert attempt(app, password=PASSWORD).status_code == 302


def test_the_owner_from_another_address_signs_in_during_an_attack(app, account, clock):
    """An attacker tries for an hour from one address, four times a minute; the owner signs
    in from their own address whenever they like."""
    checked = refused = 0
    for quarter_minute in range(4 * 60):
        response = attempt(app)
        checked += response.status_code == 200
        refused += response.status_code == 429
        if quarter_minute % 80 == 40:
            owner = app.test_client()
            assert attempt(app, password=PASSWORD, addr=OWNER, client=owner).status_code == 302
            assert signed_in(owner)
        clock.tick(timedelta(seconds=15))
    windows = 60 * 60 / app.config["LOGIN_FAILURE_WINDOW_SECONDS"]
    assert checked <= 10 * windows  # the attacker was slowed to a few guesses per window
    assert refused > 2 * checked


def test_the_owner_behind_the_attackers_address_signs_in_from_a_trusted_browser(app, account,
                                                                                clock):
    browser = trusted_browser(app, addr=ATTACKER)  # e.g. the same office NAT
    for _ in range(app.config["LOGIN_MAX_FAILURES"] + 3):
        attempt(app)
    assert wait_of(attempt(app, password=PASSWORD)) > 0  # a browser without the cookie waits
    assert sign_in(browser, addr=ATTACKER).status_code == 302
    assert signed_in(browser)


def test_spraying_from_one_address_slows_that_address_not_its_neighbours(app, account, clock):
    per_address = app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 8  # fewer hashes to check
    neighbour = "colleague@example.com"
    make_account(app, email=neighbour)
    colleague = trusted_browser(app, email=neighbour, addr=ATTACKER)
    for n in range(per_address):
        assert "Wrong email or password." in attempt(app, email=f"user{n}@example.com").text
    assert wait_of(attempt(app, email="user-next@example.com")) > 0  # the sprayer waits
    assert sign_in(colleague, email=neighbour, addr=ATTACKER).status_code == 302
    assert signed_in(colleague)
    assert attempt(app, password=PASSWORD, addr=OWNER).status_code == 302  # elsewhere: nothing
    # What stays possible: a first sign-in without the cookie from the spraying address waits.
    assert wait_of(attempt(app, password=PASSWORD)) > 0


def test_a_trusted_browser_backs_off_on_its_own_failures(app, account, clock):
    browser = trusted_browser(app)
    limit = app.config["LOGIN_MAX_FAILURES"]
    for _ in range(limit):
        assert "Wrong email or password." in sign_in(browser, password=WRONG, addr=OWNER).text
    assert wait_of(sign_in(browser, password=PASSWORD, addr=OWNER)) > 0
    assert wait_of(sign_in(browser, password=PASSWORD, addr="192.0.2.99")) > 0  # any address
    assert attempt(app, password=PASSWORD, addr=OWNER).status_code == 302  # not the address
    with app.app_context(), db.read() as conn:
        devices = conn.execute(select(login_failures.c.device_id)).scalars().all()
    assert len(devices) == limit and len(set(devices)) == 1 and devices[0]


def test_the_device_cookie_counts_only_for_its_emails_and_only_when_signed(app, account, clock):
    make_account(app, email="second@example.com")
    browser = trusted_browser(app, addr=ATTACKER)
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        attempt(app, email="second@example.com")
    # trusted for EMAIL only: for the second email this browser is one more client at ATTACKER
    assert wait_of(sign_in(browser, email="second@example.com", addr=ATTACKER)) > 0
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        attempt(app)
    forged = app.test_client()
    value = browser.get_cookie(login_throttle.DEVICE_COOKIE, path="/profile").value
    forged.set_cookie(login_throttle.DEVICE_COOKIE, value[:-2] + "xx", path="/profile")
    assert wait_of(sign_in(forged, addr=ATTACKER)) > 0
    assert sign_in(browser, addr=ATTACKER).status_code == 302


def test_one_browser_is_trusted_for_the_emails_it_signed_in_to(app, account, clock):
    app.config["LOGIN_MAX_FAILURES"] = 1  # fewer hashes to check
    browser = app.test_client()
    emails = [EMAIL] + [f"alt{n}@example.com" for n in range(login_throttle.DEVICE_EMAILS)]
    for email in emails[1:]:
        make_account(app, email=email)
    for email in emails:
        assert sign_in(browser, email=email, addr=OWNER).status_code == 302
        post(browser, "/profile/logout")
    for email in emails:
        for _ in range(app.config["LOGIN_MAX_FAILURES"]):
            attempt(app, email=email, addr=OWNER)
    assert wait_of(sign_in(browser, email=EMAIL, addr=OWNER)) > 0  # the oldest one dropped out
    for email in emails[1:]:
        assert sign_in(browser, email=email, addr=OWNER).status_code == 302
        post(browser, "/profile/logout")


def test_a_success_clears_only_its_own_failures(app, account, clock):
    limit = app.config["LOGIN_MAX_FAILURES"]
    for addr in (ATTACKER, OWNER):
        for _ in range(limit - 1):
            attempt(app, addr=addr)
    assert attempt(app, password=PASSWORD, addr=OWNER).status_code == 302
    with app.app_context(), db.read() as conn:
        left = conn.execute(select(login_failures.c.remote_addr)).scalars().all()
    assert left == [ATTACKER] * (limit - 1)  # the attacker's count is not reset by the owner
    attempt(app)
    assert wait_of(attempt(app)) > 0


def test_messages_say_seconds_or_minutes():
    assert login_throttle.message(1) == "Too many failed sign-in attempts. Try again in 1 second."
    assert login_throttle.message(119).endswith("in 119 seconds.")
    assert login_throttle.message(121).endswith("in 3 minutes.")


@pytest.mark.slow
def test_parallel_guesses_cannot_pass_the_limit(app, live_server, account):
    limit = app.config["LOGIN_MAX_FAILURES"]

    def guess(_):
        session = requests.Session()
        token = CSRF_RE.search(session.get(f"{live_server}/profile/login").text).group(1)
        return session.post(f"{live_server}/profile/login", allow_redirects=False, timeout=30,
                            data={"email": EMAIL, "password": "nope", "csrf_token": token}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(guess, range(4 * limit)))
    assert codes.count(200) == limit and codes.count(429) == 3 * limit
