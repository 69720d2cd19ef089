"""No SSRF: a webhook goes to `https` and public addresses only, checked when the endpoint is
set and again at every connection, and the address checked is the one connected to. Name
resolution is stubbed (addresses.getaddrinfo) so a name can resolve anywhere."""
import shutil
import socket
import ssl
import subprocess

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from serva import db
from serva.cli import cli as serva_cli
from serva.ids import parse_order
from serva.schema import webhook_attempts
from serva.webhooks import addresses, endpoints

from webhook_helpers import deliver, listening_partner, place, set_status, webhook_app
from webhook_receiver import Receiver, receiver  # noqa: F401 - a fixture

REFUSED = ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:10.0.0.1", "0.0.0.0",
           "192.168.1.1", "172.16.0.1", "224.0.0.1", "fe80::1", "fc00::1", "64:ff9b::a00:1",
           "2002:a00:1::1", "100.64.0.1", "240.0.0.1"]


def url_for_address(address):
    return f"https://[{address}]/hook" if ":" in address else f"https://{address}/hook"


def resolving_to(monkeypatch, *found):
    def getaddrinfo(host, port):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in found]
    monkeypatch.setattr(addresses, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("address", REFUSED)
def test_registration_refuses_private_address_literals(address):
    with pytest.raises(addresses.DestinationError, match="not allowed"):
        endpoints.check_url(url_for_address(address), allow_private=False)
    endpoints.check_url(url_for_address(address), allow_private=True)


@pytest.mark.parametrize("address", REFUSED)
def test_registration_refuses_a_name_resolving_to_a_private_address(monkeypatch, address):
    resolving_to(monkeypatch, "93.184.216.34", address)  # one bad address is enough
    with pytest.raises(addresses.DestinationError, match="hooks.example.com is not allowed"):
        endpoints.check_url("https://hooks.example.com/serva", allow_private=False)


def test_public_addresses_and_https_only():
    resolving = ["93.184.216.34", "2606:2800:220:1::1", "::ffff:93.184.216.34"]
    for address in resolving:
        assert endpoints.check_url(url_for_address(address), allow_private=False)
    for url in ("http://93.184.216.34/hook", "ftp://93.184.216.34/", "https://user:pw@93.184.216.34/",
                "https:///nohost", "", "https://93.184.216.34:99999/"):
        with pytest.raises(addresses.DestinationError):
            endpoints.check_url(url, allow_private=False)
    assert endpoints.check_url("http://127.0.0.1:8080/hook", allow_private=True)


def test_a_name_that_does_not_resolve_is_refused(monkeypatch):
    def fails(host, port):
        raise socket.gaierror("Name or service not known")
    monkeypatch.setattr(addresses, "getaddrinfo", fails)
    with pytest.raises(addresses.DestinationError, match="does not resolve"):
        endpoints.check_url("https://nowhere.invalid/", allow_private=False)


@pytest.fixture
def app(tmp_path):
    app = webhook_app(f"sqlite:///{tmp_path / 'serva.sqlite'}")
    yield app
    app.extensions["serva.engine"].dispose()


def test_the_cli_refuses_a_private_destination_unless_allowed(app, monkeypatch):
    from conftest import make_partner
    make_partner(app, "p@example.com")
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    cli = app.test_cli_runner()
    for address in ("127.0.0.1", "10.0.0.5", "169.254.169.254", "[::1]", "[::ffff:10.0.0.1]"):
        result = cli.invoke(serva_cli, ["webhook", "set", "p@example.com", f"https://{address}/h"])
        assert result.exit_code == 2 and "not allowed" in result.output
    resolving_to(monkeypatch, "10.0.0.7")
    result = cli.invoke(serva_cli, ["webhook", "set", "p@example.com", "https://inside.example/h"])
    assert result.exit_code == 2 and "10.0.0.7 is a private address" in result.output


def test_delivery_checks_again_at_connection_time(app, client, catalog, receiver, monkeypatch):
    """Registered while the name resolved to a public address; by delivery it resolves to
    127.0.0.1 (DNS rebinding): the attempt is refused and nothing is sent."""
    resolving_to(monkeypatch, "93.184.216.34")
    _, key, _ = listening_partner(app, "https://hooks.example.com/serva")
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    resolving_to(monkeypatch, "127.0.0.1")
    set_status(app, parse_order(place(client, key)), "Completed")
    assert deliver(app)["retrying"] == 1
    with app.app_context(), db.read() as conn:
        error = conn.execute(select(webhook_attempts.c.error)).scalar()
    assert "127.0.0.1 is a loopback address" in error
    assert receiver.requests == []


def test_the_checked_address_is_the_one_connected_to(app, client, catalog, receiver, monkeypatch):
    """A name that only the stub resolves (to the receiver's 127.0.0.1): the request arrives,
    so the connection went to the address from the one check, with the name as Host."""
    resolving_to(monkeypatch, "127.0.0.1")
    port = receiver.server.server_address[1]
    _, key, _ = listening_partner(app, f"http://hooks.serva-test.invalid:{port}/serva")
    set_status(app, parse_order(place(client, key)), "Completed")
    assert deliver(app)["delivered"] == 1
    headers, _, path = receiver.requests[0]
    assert headers["host"] == f"hooks.serva-test.invalid:{port}" and path == "/serva"


def self_signed(tmp_path, name):
    """A certificate for `name` and its key, made with the openssl command."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_https_goes_to_the_checked_address_with_the_name_for_sni_and_the_certificate(
        app, client, catalog, tmp_path, monkeypatch):
    """The receiver's certificate names hooks.serva-test.invalid, which only the stub
    resolves (to 127.0.0.1): the delivery connects to that address, sends the name as TLS
    server name and checks the certificate against it. A certificate for another name fails
    (checked on each new connection; here another receiver, so no open one is reused)."""
    name = "hooks.serva-test.invalid"
    cert, key = self_signed(tmp_path, name)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    names = []
    tls.sni_callback = lambda sock, server_name, context: names.append(server_name)
    server, second = Receiver(tls=tls).start(), Receiver(tls=tls).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate only
    resolving_to(monkeypatch, "127.0.0.1")
    try:
        port = server.server.server_address[1]
        account_id, key_, secret = listening_partner(app, f"https://{name}:{port}/serva")
        set_status(app, parse_order(place(client, key_)), "Completed")
        assert deliver(app)["delivered"] == 1
        assert names == [name] and server.requests[0][0]["host"] == f"{name}:{port}"
        other, _ = self_signed(tmp_path, "other.serva-test.invalid")
        monkeypatch.setenv("SSL_CERT_FILE", str(other))
        with app.app_context(), db.write() as conn:
            endpoints.set_url(conn, account_id,
                              f"https://{name}:{second.server.server_address[1]}/serva", True)
        set_status(app, parse_order(place(client, key_)), "Completed")
        assert deliver(app)["retrying"] == 1 and len(second.requests) == 0
        with app.app_context(), db.read() as conn:
            error = conn.execute(select(webhook_attempts.c.error)
                                 .order_by(webhook_attempts.c.id.desc())).scalar()
        assert "certificate" in error.lower()
    finally:
        server.stop()
        second.stop()


def test_the_webhook_settings_are_checked_at_start():
    from serva import settings
    assert settings.load({}).webhook_allow_private is False
    assert settings.load({"SERVA_WEBHOOK_ALLOW_PRIVATE": "1"}).webhook_allow_private is True
    for name, value in (("SERVA_WEBHOOK_ALLOW_PRIVATE", "maybe"), ("SERVA_WEBHOOK_CONCURRENCY", "0"),
                        ("SERVA_WEBHOOK_LEASE_SECONDS", "-5")):
        with pytest.raises(settings.SettingsError, match=name):
            settings.load({name: value})
