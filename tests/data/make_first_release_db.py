"""Rebuild tests/data/first_release.sqlite with the first release's own code (commit 89138a3).

    .venv/bin/python tests/data/make_first_release_db.py

The commit is unpacked (`git archive`) into a temporary directory and its `serva` package is
imported from there with this venv's libraries; everything below goes through that release's
operator CLI and API exactly as an operator and partners would have used it, at a frozen
time. What it made (the raw keys, which order is which) is written next to the database in
first_release.json, which tests/test_upgrade.py reads: the keys are the ones the release
printed, so the upgraded database must still accept them."""
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

COMMIT = "89138a3"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DATABASE = HERE / "first_release.sqlite"
FACTS = HERE / "first_release.json"
FROZEN_AT = "2026-11-20 12:00:00"


def unpack(commit: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "serva"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def build(old_code: Path, path: Path) -> dict:
    sys.path.insert(0, str(old_code))
    for name in [m for m in sys.modules if m == "serva" or m.startswith("serva.")]:
        del sys.modules[name]
    import serva
    assert Path(serva.__file__).resolve().is_relative_to(old_code.resolve()), serva.__file__
    from freezegun import freeze_time

    app = serva.create_app({"TESTING": True, "SECRET_KEY": "first-release",
                            "WTF_CSRF_ENABLED": False, "DATABASE_URL": f"sqlite:///{path}"})
    cli, client = app.test_cli_runner(), app.test_client()

    def run(*args) -> str:
        result = cli.invoke(args=list(args))
        assert result.exit_code == 0, (args, result.output)
        return result.output

    def api(key, headers=None, **params) -> dict:
        response = client.post("/api/v1", data={"key": key, **params}, headers=headers or {})
        assert response.status_code == 200, response.data
        body = response.get_json()
        assert "error" not in body, (params, body)
        return body

    with freeze_time(FROZEN_AT) as clock:
        run("init-db")
        demo_key = run("demo").splitlines()[-1]  # demo@example.com, the catalog, coupon DEMO10
        run("account", "create", "reseller@example.com", "--password", "reseller-pass", "--approve")
        run("account", "credit", "reseller@example.com", "250", "--note", "wire transfer")
        run("account", "debit", "reseller@example.com", "12.345678", "--note", "chargeback fee")
        run("account", "discount", "reseller@example.com", "7.5")
        run("account", "rate", "reseller@example.com", "1234", "0.5")
        run("key", "create", "reseller@example.com")  # rotated below: one revoked key row stays
        reseller_key = run("key", "create", "reseller@example.com").strip()
        run("account", "create", "waiting@example.com", "--password", "waiting-pass")
        failed = client.post("/profile/login", data={"email": "waiting@example.com",
                                                     "password": "wrong-password"})
        assert b"Wrong email or password" in failed.data  # a login_failures row
        run("account", "create", "banned@example.com", "--approve")
        run("account", "credit", "banned@example.com", "5", "--note", "trial")
        run("account", "ban", "banned@example.com", "--reason", "abuse")
        run("coupon", "create", "FLAT2", "--amount", "2", "--max-uses", "10", "--service", "1234")
        clock.tick(60)

        orders = {}
        orders["completed"] = api(demo_key, action="add", service="1234",
                                  link="https://instagram.com/p/one", quantity="1000")["order"]
        orders["partial"] = api(demo_key, action="add", service="1234",
                                link="https://instagram.com/p/two", quantity="2000")["order"]
        orders["canceled"] = api(demo_key, action="add", service="1235",
                                 link="https://youtube.com/watch?v=abc", quantity="1")["order"]
        orders["coupon"] = api(demo_key, action="add", service="1234", coupon="DEMO10",
                               link="https://instagram.com/p/three", quantity="500")["order"]
        orders["fields"] = api(demo_key, action="add", service="7788", quantity="100",
                               **{"fields[player_id]": "123456789", "fields[server_id]": "55"})["order"]
        orders["comments"] = api(reseller_key, action="add", service="1236",
                                 link="https://instagram.com/p/four", comments="great\nnice\nwow")["order"]
        orders["idempotent"] = api(reseller_key, headers={"Idempotency-Key": "batch-7-line-1"},
                                   action="add", service="1234", coupon="FLAT2",
                                   link="https://instagram.com/p/five", quantity="3000")["order"]
        clock.tick(3600)
        run("order", "set-status", orders["completed"], "Completed", "--start-count", "1200")
        run("order", "set-status", orders["partial"], "Partial", "--start-count", "50",
            "--remains", "800")
        run("order", "set-status", orders["canceled"], "Canceled")
        run("order", "set-status", orders["fields"], "Processing")
        run("order", "set-status", orders["idempotent"], "In progress", "--start-count", "10")
        run("audit")
        balances = {email: api(key, action="balance")["balance"]
                    for email, key in (("demo@example.com", demo_key),
                                       ("reseller@example.com", reseller_key))}
    app.extensions["serva.engine"].dispose()
    return {"commit": COMMIT, "frozen_at": FROZEN_AT,
            "keys": {"demo@example.com": demo_key, "reseller@example.com": reseller_key},
            "balances": balances, "orders": orders}


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        unpack(COMMIT, scratch / "code")
        target = scratch / "first_release.sqlite"
        facts = build(scratch / "code", target)
        conn = sqlite3.connect(target)  # one self-contained file: no -wal beside it
        conn.execute("VACUUM")  # still in WAL mode, as the release left it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        shutil.copyfile(target, DATABASE)
    FACTS.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    print(f"wrote {DATABASE.relative_to(REPO)} and {FACTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
