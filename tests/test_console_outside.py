"""From outside: a real `serva serve` process and real `serva` commands, driven with plain
HTTP forms (requests, no browser): an operator made by the CLI signs in, enrols TOTP from
the secret printed on the page, credits a partner, and the partner's `balance` and
`serva audit` agree with it."""
import os
import re
import subprocess
import sys
import time

import pyotp
import pytest
import requests

from test_serve import ROOT, server_url, start_server, stop_server

pytestmark = pytest.mark.slow

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def serva(database_url, *args):
    env = {**os.environ, "SERVA_DATABASE_URL": database_url, "SERVA_SECRET_KEY": "test-secret"}
    done = subprocess.run([sys.executable, "-c", "from serva.cli import main; main()", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done


def ok(database_url, *args) -> str:
    done = serva(database_url, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def token(response) -> str:
    return TOKEN.search(response.text).group(1)


def test_an_operator_made_by_the_cli_credits_a_partner_over_plain_http(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'serva.sqlite'}"
    ok(database_url, "init-db")
    ok(database_url, "operator", "create", "boss@example.com", "--role", "owner",
       "--password", "boss-password-1")
    ok(database_url, "account", "create", "shop@example.com", "--approve")
    key = ok(database_url, "key", "create", "shop@example.com").strip()
    process = start_server(database_url, tmp_path / "server.log", workers=1)
    try:
        base = server_url(process, tmp_path / "server.log", time.monotonic() + 60)
        browser = requests.Session()
        login = browser.get(f"{base}/admin/login", timeout=10)
        signed = browser.post(f"{base}/admin/login", timeout=10, data={
            "email": "boss@example.com", "password": "boss-password-1", "csrf_token": token(login)})
        assert signed.url == f"{base}/admin/enrol"
        secret = SECRET.search(signed.text).group(1)
        enrolled = browser.post(f"{base}/admin/enrol", timeout=10, data={
            "code": pyotp.TOTP(secret).now(), "csrf_token": token(signed)})
        assert enrolled.status_code == 200 and "recovery codes" in enrolled.text
        found = browser.get(f"{base}/admin/accounts", params={"q": "shop@"}, timeout=10)
        account_path = re.search(r'href="(/admin/accounts/\d+)">shop@example.com<', found.text).group(1)
        page = browser.get(f"{base}{account_path}", timeout=10)
        credited = browser.post(f"{base}{account_path}/credit", timeout=10, data={
            "amount": "42.5", "note": "paid by wire", "csrf_token": token(page)})
        assert "shop@example.com: balance 42.5" in credited.text
        balance = requests.post(f"{base}/api/v1", data={"action": "balance", "key": key},
                                timeout=10).json()
        assert balance == {"balance": "42.5", "currency": "USD"}
    finally:
        stop_server(process)
    audit = serva(database_url, "audit")
    assert audit.returncode == 0 and audit.stdout.startswith("audit passed"), audit.stdout
    assert "42.5" in ok(database_url, "account", "show", "shop@example.com")
