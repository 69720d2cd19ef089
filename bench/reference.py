"""A reference point, not part of Serva: the least a `balance` can do with one SQLite query.

One Flask route: the key from the form, one indexed SELECT (the key's account balance) on a
per-thread sqlite3 connection, a constant-shaped JSON answer. No pool, no SQLAlchemy, no
access log, no request id, no auth rules. `bench/run.py --reference` measures it against the
bare endpoint in the same run (bench/README.md: what a single SQLite call costs here)."""
import hashlib
import os
import sqlite3
import threading

from flask import Flask, Response, request

app = Flask(__name__)
DATABASE = os.environ["SERVA_BENCH_DB"]
SQL = ("SELECT accounts.balance FROM api_keys JOIN accounts ON accounts.id = api_keys.account_id "
       "WHERE api_keys.key_hash = ?")
local = threading.local()


@app.route("/api/v1", methods=["GET", "POST"], strict_slashes=False)
def endpoint():
    connection = getattr(local, "connection", None)
    if connection is None:
        connection = local.connection = sqlite3.connect(DATABASE, isolation_level=None,
                                                        check_same_thread=False)
    digest = hashlib.sha256(request.form.get("key", "").encode()).hexdigest()
    row = connection.execute(SQL, (digest,)).fetchone()
    return Response(b'{"balance":"%d","currency":"USD"}' % (row[0] if row else 0),
                    mimetype="application/json")
