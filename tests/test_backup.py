"""`serva backup PATH`: SQLite's online backup API, taken by another process while a real
server keeps placing orders; the copy is a consistent database that passes
`PRAGMA integrity_check` and `serva audit`, and a copy that would not pass is never left at
PATH. Bounded: at most 8 × 150 orders, stopped once the backup has finished."""
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from serva import create_app, db
from serva.schema import accounts, ledger, orders
from serva.cli import cli as serva_cli

from conftest import make_partner, post_retrying_busy, serving

ROOT = Path(__file__).resolve().parent.parent


def serva(app, *args):
    env = {**os.environ, "SERVA_DATABASE_URL": app.config["DATABASE_URL"], "SERVA_SECRET_KEY": "t",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", "from serva.cli import main; main()", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def count_orders(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(func.count()).select_from(orders)).scalar()


@pytest.mark.slow
def test_a_backup_taken_under_write_load_is_consistent_and_audits_clean(app, catalog, tmp_path):
    keys = [make_partner(app, f"p{i}@example.com", balance="1000")[1] for i in range(4)]
    target = tmp_path / "backup" / "serva-copy.sqlite"
    target.parent.mkdir()
    stop = threading.Event()
    answers = []

    def place(t):
        for n in range(150):
            if stop.is_set():
                return
            answers.append(post_retrying_busy(url, action="add", key=keys[t % 4], service="1234",
                                              quantity="100", link=f"https://example.com/b/{t}/{n}"))

    with serving(app) as url:
        clients = [threading.Thread(target=place, args=(t,)) for t in range(8)]
        for client in clients:
            client.start()
        while len(answers) < 40 and any(c.is_alive() for c in clients):
            threading.Event().wait(0.05)
        before, answered_before = count_orders(app), len(answers)
        done = serva(app, "backup", str(target))
        after_backup = len(answers)
        stop.set()
        for client in clients:
            client.join(timeout=60)
    after = count_orders(app)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backup written to {target}: ") and "audit passed" in done.stdout
    assert all(status == 200 and '"order"' in text for status, text in answers), answers[:3]
    assert after_backup > answered_before, "no orders were placed while the backup ran"
    assert sorted(os.listdir(target.parent)) == [target.name]  # one file: no -wal, no leftovers

    # The copy on its own: integrity, the audit (as an operator would run it), and a snapshot
    # between the orders before the backup and after it.
    plain = sqlite3.connect(target)
    assert plain.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert plain.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    plain.close()
    copy = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": f"sqlite:///{target}"})
    try:
        result = copy.test_cli_runner().invoke(serva_cli, args=["audit"])
        assert result.exit_code == 0, result.output
        copied = count_orders(copy)
        assert before <= copied <= after
        with copy.app_context(), db.read() as conn:
            charged = conn.execute(select(func.count()).select_from(ledger)
                                   .where(ledger.c.kind == "charge")).scalar()
        assert charged == copied  # every copied order with its charge, no charge without order
    finally:
        copy.extensions["serva.engine"].dispose()


def test_a_copy_that_fails_the_audit_is_not_left_at_path(app, tmp_path):
    account_id, _ = make_partner(app)
    with app.app_context(), db.write() as conn:  # a balance that disagrees with its ledger
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(balance=1))
    app.extensions["serva.engine"].dispose()
    target = tmp_path / "copy.sqlite"
    done = serva(app, "backup", str(target))
    assert done.returncode == 1
    assert done.stderr.startswith("error: the copy failed the audit: account partner@example.com")
    assert not any(name.startswith("copy.sqlite") for name in os.listdir(tmp_path))


def test_a_backup_never_overwrites_a_file(app, tmp_path):
    make_partner(app)
    target = tmp_path / "existing.sqlite"
    target.write_bytes(b"keep me")
    done = serva(app, "backup", str(target))
    assert done.returncode == 2 and "exists" in done.stderr
    assert target.read_bytes() == b"keep me"
    done = serva(app, "backup", str(tmp_path / "missing-dir" / "x.sqlite"))
    assert done.returncode == 2 and "no directory" in done.stderr
