"""Settings: SERVA_* read in one place (serva/settings.py), typed, and checked when the app is
made; a value that cannot work stops every way of starting Serva with one line naming the
variable and exit status 2."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serva import create_app, settings
from serva.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def test_the_defaults(tmp_path):
    config = settings.load({}).config(str(tmp_path / "instance"))
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'instance' / 'serva.sqlite'}"
    assert config["SECRET_KEY"] is None  # made once in the instance folder (create_app)
    assert (config["CURRENCY"], config["INTEGER_IDS"], config["SESSION_COOKIE_SECURE"]) == (
        "USD", False, False)
    assert (config["MAX_CONTENT_LENGTH"], config["SQLITE_SYNCHRONOUS"]) == (256 * 1024, "FULL")
    assert (config["TRUSTED_PROXIES"], config["RATELIMIT_STORAGE_URI"]) == (0, "memory://")
    assert (config["RATE_LIMIT_PER_KEY"], config["RATE_LIMIT_INVALID_KEYS"]) == (
        "100/second", "30/minute")
    assert (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"]) == (5.0, 30.0)
    assert (config["WEBHOOK_RETENTION_DAYS"], config["WEBHOOK_LEASE_SECONDS"]) == (30, 60)
    assert config["WORKER_NICE"] == 10
    assert "WRITE_WAITERS" not in config


def test_values_from_the_environment_are_typed():
    loaded = settings.load({
        "SERVA_DATABASE_URL": "postgresql+psycopg://serva@db.internal/serva",
        "SERVA_INTEGER_IDS": "yes", "SERVA_SECURE_COOKIES": "1", "SERVA_MAX_BODY_BYTES": " 1000 ",
        "SERVA_WRITE_WAIT_SECONDS": "2.5", "SERVA_SQLITE_SYNCHRONOUS": "normal",
        "SERVA_TRUSTED_PROXIES": "2", "SERVA_RATE_LIMIT_PER_KEY": "",
        "SERVA_CURRENCY": "EUR", "SERVA_UNRELATED": "whatever"})
    assert loaded == Settings(database_url="postgresql+psycopg://serva@db.internal/serva",
                              integer_ids=True, session_cookie_secure=True,
                              max_content_length=1000, write_wait_seconds=2.5,
                              sqlite_synchronous="NORMAL", trusted_proxies=2,
                              rate_limit_per_key="", currency="EUR")
    assert settings.load({"SERVA_DATABASE_URL": "", "SERVA_SECRET_KEY": ""}) == Settings()


@pytest.mark.parametrize("name, value, message", [
    ("SERVA_MAX_BODY_BYTES", "256k", "SERVA_MAX_BODY_BYTES must be a whole number of bytes of "
                                     "at least 1 (got '256k')"),
    ("SERVA_TRUSTED_PROXIES", "-1", "SERVA_TRUSTED_PROXIES must be the number of reverse proxies "
                                    "in front of Serva (0 for none) (got '-1')"),
    ("SERVA_TRUSTED_PROXIES", "yes", None),
    ("SERVA_INTEGER_IDS", "maybe", "SERVA_INTEGER_IDS must be 1 or 0 (or true/false) (got 'maybe')"),
    ("SERVA_SQLITE_SYNCHRONOUS", "SOMETIMES", "SERVA_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL "
                                              "or EXTRA (got 'SOMETIMES')"),
    ("SERVA_WRITE_WAIT_SECONDS", "nan", None),
    ("SERVA_PROVIDER_READ_TIMEOUT", "0", None),
    ("SERVA_LOGIN_MAX_FAILURES", "0", None),
    ("SERVA_RATE_LIMIT_PER_KEY", "lots", None),
    ("SERVA_CURRENCY", "US Dollar", None),
    ("SERVA_WEBHOOK_RETENTION_DAYS", "0", "SERVA_WEBHOOK_RETENTION_DAYS must be a whole number "
                                          "of days, at least 1 (got '0')"),
    ("SERVA_WEBHOOK_RETENTION_DAYS", "30d", None),
    ("SERVA_WORKER_NICE", "20", "SERVA_WORKER_NICE must be a whole number from 0 to 19 "
                                "(got '20')"),
    ("SERVA_WORKER_NICE", "-5", None),
    ("SERVA_RATELIMIT_STORAGE_URI", "127.0.0.1:6379", "SERVA_RATELIMIT_STORAGE_URI must be a "
                                                      "rate-limit storage URI such as memory:// or "
                                                      "redis://127.0.0.1:6379"),
    ("SERVA_DATABASE_URL", "postgres:/s3cret@db", "SERVA_DATABASE_URL must be a database URL such "
                                                  "as sqlite:////srv/serva/instance/serva.sqlite "
                                                  "or postgresql+psycopg://user@host/serva"),
])
def test_a_value_that_cannot_work_is_one_line_naming_the_variable(name, value, message):
    with pytest.raises(SettingsError) as refused:
        settings.load({name: value})
    text = str(refused.value)
    assert isinstance(refused.value, ValueError) and "\n" not in text
    assert text.startswith(f"{name} must be ")
    if message is not None:
        assert text == message


def test_the_apps_config_holds_the_settings_and_a_config_may_set_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVA_CURRENCY", "GBP")
    monkeypatch.setenv("SERVA_LOGIN_MAX_FAILURES", "7")
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "LOGIN_MAX_FAILURES": 3,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite'}"})
    assert (app.config["CURRENCY"], app.config["LOGIN_MAX_FAILURES"]) == ("GBP", 3)
    assert app.config["TESTING"] is True
    app.extensions["serva.engine"].dispose()
    with pytest.raises(SettingsError, match="^LOGIN_MAX_FAILURES must be a whole number"):
        create_app({"TESTING": True, "SECRET_KEY": "t", "LOGIN_MAX_FAILURES": "several",
                    "DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite'}"})


def test_settings_is_the_only_reader_of_the_environment():
    """No module of serva/ but settings.py reads os.environ or os.getenv."""
    offenders = []
    for path in sorted((ROOT / "serva").rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "serva":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} os.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} from os import {a.name}"
                              for a in node.names if a.name in ("environ", "environb", "getenv")]
    assert not offenders, "\n".join(offenders)


def _start(command, tmp_path, **env):
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SERVA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
             "SERVA_SECRET_KEY": "t", **env,
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})


WAITRESS = [str(Path(sys.executable).with_name("waitress-serve")), "--listen=127.0.0.1:0",
            "--no-clear-untrusted-proxy-headers", "wsgi:app"]
SERVE = [sys.executable, "-c", "from serva.cli import main; main()", "serve", "--port", "0"]


@pytest.mark.parametrize("command", [WAITRESS, SERVE], ids=["waitress-serve wsgi:app", "serva serve"])
def test_a_bad_setting_stops_the_server_with_one_line_and_status_2(tmp_path, command):
    done = _start(command, tmp_path, SERVA_TRUSTED_PROXIES="one")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert lines == ["error: SERVA_TRUSTED_PROXIES must be the number of reverse proxies in front "
                     "of Serva (0 for none) (got 'one')"], done.stderr


def test_a_bad_retention_stops_prune_with_one_line_and_status_2(tmp_path):
    done = _start([sys.executable, "-c", "from serva.cli import main; main()", "prune"], tmp_path,
                  SERVA_WEBHOOK_RETENTION_DAYS="a month")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert lines == ["error: SERVA_WEBHOOK_RETENTION_DAYS must be a whole number of days, at "
                     "least 1 (got 'a month')"], done.stderr
    assert done.stdout == ""
