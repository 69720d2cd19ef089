"""Behind a reverse proxy (SERVA_TRUSTED_PROXIES=1), every documented way of serving takes the
client's address from X-Forwarded-For: `make run`, `waitress-serve … wsgi:app` and
`serva serve`, each started as a real process. Here the test is the proxy: it sends the header
itself from 127.0.0.1. An attacker's address is throttled at sign-in while the owner, from
its own address, signs in; the throttle's rows hold the forwarded addresses. (waitress 3
drops X-Forwarded-* unless told not to: without that every client would be 127.0.0.1, and
the attacker's failures would make the owner wait.)"""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from serva import db
from serva.schema import login_failures

from conftest import NO_RATE_LIMITS, stop_process_group
from test_dashboard import CSRF_RE, EMAIL, PASSWORD, make_account

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VENV = Path(sys.prefix)
ATTACKER, OWNER = "203.0.113.7", "198.51.100.9"
MAX_FAILURES = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVERS = {
    # The Makefile's own target, with this test run's virtualenv and no install step.
    "make run": lambda port: ["make", "-s", "-o", f"{VENV}/.installed", "run", f"VENV={VENV}",
                              f"PORT={port}"],
    "waitress-serve wsgi:app": lambda port: [
        str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}",
        "--no-clear-untrusted-proxy-headers", "wsgi:app"],
    "serva serve": lambda port: [str(BIN / "serva"), "serve", "--port", str(port),
                                 "--workers", "2", "--threads", "4"],
}


def _sign_in(url, address, password):
    """One sign-in through the "proxy" for a client at `address`: the status code."""
    session = requests.Session()
    session.headers["X-Forwarded-For"] = address
    page = session.get(f"{url}/profile/login", timeout=30)
    response = session.post(f"{url}/profile/login", allow_redirects=False, timeout=30, data={
        "email": EMAIL, "password": password, "csrf_token": CSRF_RE.search(page.text).group(1)})
    return response.status_code


def _wait_for(url, process, log_path, deadline):
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/profile/login", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer:\n{log_path.read_text()}")




@pytest.mark.parametrize("server", SERVERS)
def test_behind_a_proxy_each_server_throttles_the_forwarded_address(app, tmp_path, server):
    make_account(app)
    app.extensions["serva.engine"].dispose()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **NO_RATE_LIMITS, "SERVA_DATABASE_URL": app.config["DATABASE_URL"],
           "SERVA_SECRET_KEY": "test-secret", "SERVA_TRUSTED_PROXIES": "1",
           "SERVA_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:  # `make run > file 2>&1`, as an operator would
        process = subprocess.Popen(SERVERS[server](port), cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(url, process, log_path, time.monotonic() + 90)
        failures = [_sign_in(url, ATTACKER, "wrong password") for _ in range(MAX_FAILURES)]
        throttled = _sign_in(url, ATTACKER, "wrong password")
        owner = _sign_in(url, OWNER, PASSWORD)
    finally:
        stop_process_group(process)
    assert failures == [200] * MAX_FAILURES  # "Wrong email or password."
    assert throttled == 429
    assert owner == 302  # signed in, sent on to the dashboard
    with app.app_context(), db.read() as conn:
        recorded = conn.execute(select(login_failures.c.remote_addr)).scalars().all()
    assert recorded == [ATTACKER] * MAX_FAILURES

    if server == "make run":  # the whole run is in the redirected log, none of it lost
        output = log_path.read_text()
        assert re.search(r"(created a new database|already at schema revision)",
                         output), output
        key = re.search(r"^(sk_\S+)$", output, re.M)
        assert key, output
        assert f"curl -s {url}/api/v1 -d action=balance -d key={key.group(1)}" in output
        assert output.index("demo account:") < output.index(key.group(1)) < output.index("Try it:")
