"""The webhook page of the dashboard (/profile/webhook/): set the URL (refused for a private
address unless allowed), the secret revealed once and verifying real deliveries, rotate, send
a test event, the last deliveries with their HTTP status and error, resend a failed event,
the reason an endpoint was disabled, enable again."""
import re
import threading

import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook

from serva import db, fulfilment
from serva.schema import webhook_events
from serva.webhooks import delivery

from test_dashboard import csrf_token, make_account, sign_in
from webhook_helpers import webhook_app
from webhook_receiver import receiver  # noqa: F401 - a fixture

SECRET_RE = re.compile(r'<code id="webhook-secret">([^<]+)</code>')


@pytest.fixture
def app(tmp_path):
    app = webhook_app(f"sqlite:///{tmp_path / 'serva.sqlite'}")
    yield app
    app.extensions["serva.engine"].dispose()


def form(client, path, follow_redirects=False, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/profile/webhook/"), **data},
                       follow_redirects=follow_redirects)


def deliver(app):
    with app.app_context():
        return delivery.delivery_pass("page-test", fulfilment.settings(), threading.Event())


def test_set_reveal_once_test_event_deliveries_and_resend(app, client, receiver):
    make_account(app)
    sign_in(client)
    assert "No webhook yet" in client.get("/profile/webhook/").text
    answer = form(client, "/profile/webhook/", url=receiver.url)
    secret = SECRET_RE.search(answer.text).group(1)
    assert secret.startswith("whsec_") and answer.headers["Cache-Control"] == "no-store"
    page = client.get("/profile/webhook/").text
    assert secret not in page and secret[:10] in page and receiver.url in page
    receiver.script = ["500"]
    assert "on its way" in form(client, "/profile/webhook/test", follow_redirects=True).text
    deliver(app)
    page = client.get("/profile/webhook/").text
    assert "webhook.test" in page and ">500<" in page and "HTTP 500" in page
    assert 'id="failing-since"' in page
    with app.app_context(), db.write() as conn:  # retries run out
        conn.execute(update(webhook_events).values(state="failed", next_attempt_at=None))
    page = client.get("/profile/webhook/").text
    msg_id = re.search(r'name="event" value="([^"]+)"', page).group(1)
    assert "will be delivered again" in form(client, "/profile/webhook/resend", event=msg_id,
                                             follow_redirects=True).text
    deliver(app)
    assert receiver.unique() == {msg_id} and len(receiver.requests) == 2
    headers, body, _ = receiver.requests[-1]
    assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"
    assert "Cannot resend" in form(client, "/profile/webhook/resend", event=msg_id,
                                   follow_redirects=True).text


def test_a_private_url_is_refused_unless_allowed(app, client):
    make_account(app)
    sign_in(client)
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    for url in ("https://127.0.0.1/h", "https://[::ffff:10.0.0.1]/h", "http://example.com/h",
                "https://169.254.169.254/latest"):
        answer = form(client, "/profile/webhook/", url=url)
        assert answer.status_code == 400 and "cannot be used" in answer.text
        assert 'id="webhook-secret"' not in answer.text
    assert "No webhook yet" in client.get("/profile/webhook/").text


def test_rotate_needs_confirmation_and_shows_the_reason_it_was_disabled(app, client, receiver):
    make_account(app)
    sign_in(client)
    first = SECRET_RE.search(form(client, "/profile/webhook/", url=receiver.url).text).group(1)
    assert "Tick the confirmation" in form(client, "/profile/webhook/rotate",
                                           follow_redirects=True).text
    rotated = form(client, "/profile/webhook/rotate", confirm="yes").text
    second = SECRET_RE.search(rotated).group(1)
    assert second != first and "previous secret also signs" in client.get("/profile/webhook/").text
    receiver.script = ["410"]
    form(client, "/profile/webhook/test")
    deliver(app)
    page = client.get("/profile/webhook/").text
    assert "410 Gone" in page and 'id="enable"' in page
    assert "enabled again" in form(client, "/profile/webhook/enable", follow_redirects=True).text
    assert "disabled by you" in form(client, "/profile/webhook/disable", follow_redirects=True).text


def test_posts_need_the_csrf_token(app, client, receiver):
    make_account(app)
    sign_in(client)
    assert client.post("/profile/webhook/", data={"url": receiver.url}).status_code == 400
