"""The public page's webhook receivers, run as shown (taken from the rendered page) — Python
with standardwebhooks, PHP under `php -S`, JavaScript under Node — each sent real deliveries
by the worker's delivery pass: a signed event is accepted (2xx, printed once, by webhook-id),
a retried delivery is not printed twice, and a forged signature is refused with 400. PHP and
Node tests skip when they are not installed."""
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import update

from serva import db
from serva.ids import parse_order
from serva.schema import webhook_events

from webhook_helpers import deliver, events, listening_partner, place, set_status, webhook_app

RUNNERS = {
    "python": lambda path, port: [sys.executable, str(path)],
    "php": lambda path, port: [shutil.which("php") or "php", "-S", f"127.0.0.1:{port}", str(path)],
    "javascript": lambda path, port: [shutil.which("node") or "node", str(path)],
}
SUFFIX = {"python": "py", "php": "php", "javascript": "mjs"}
TOOL = {"python": None, "php": "php", "javascript": "node"}


@pytest.fixture
def app(tmp_path):
    app = webhook_app(f"sqlite:///{tmp_path / 'serva.sqlite'}")
    yield app
    app.extensions["serva.engine"].dispose()


def shown_snippet(client, language) -> str:
    page = client.get("/api").text
    found = re.search(rf'<code id="webhook-{language}" data-language="{language}">(.*?)</code>',
                      page, re.S)
    return html.unescape(found.group(1))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port, process):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the receiver did not start")


@pytest.mark.parametrize("language", ["python", "php", "javascript"])
def test_the_receivers_on_the_page_verify_real_deliveries(app, client, catalog, tmp_path,
                                                          language):
    if TOOL[language] and shutil.which(TOOL[language]) is None:
        pytest.skip(f"{TOOL[language]} is not installed")
    source = shown_snippet(client, language)
    path = tmp_path / f"serva-webhook.{SUFFIX[language]}"
    path.write_text(source)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/serva"
    _, key, secret = listening_partner(app, url)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    process = subprocess.Popen(RUNNERS[language](path, port),
                               env={**env, "WEBHOOK_SECRET": secret, "PORT": str(port)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    try:
        wait_listening(port, process)
        order = place(client, key)
        set_status(app, parse_order(order), "Partial", remains=10)
        assert deliver(app)["delivered"] == 1
        with app.app_context(), db.write() as conn:  # delivered again (the answer was lost)
            conn.execute(update(webhook_events).values(state="pending", next_attempt_at=0))
        assert deliver(app)["delivered"] == 1
        event = events(app)[0]
        forged = requests.post(url, data=event.payload, timeout=10, headers={
            "webhook-id": event.msg_id, "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZSBvZiB0aGUgcmlnaHQgbGVuZ3RoISE="})
        assert forged.status_code == 400
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    printed = [line for line in (out + err).splitlines() if line.startswith(event.msg_id)]
    assert len(printed) == 1, (out, err)  # once, though delivered twice
    assert "order.updated" in printed[0] and order in printed[0]
    data = json.loads(event.payload)["data"]
    assert data["status"] == "Partial" and data["remains"] == 10
