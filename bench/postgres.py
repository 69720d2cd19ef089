"""`make bench-pg`: the `make bench` actions on PostgreSQL, with one hot account and with many.

What it does (bench/README.md, "PostgreSQL", has the method and the results):
  1. builds or reuses the SQLite bench dataset (bench/gen.py; --orders, default 1,000,000) and
     loads it into a new database `serva_bench_<pid>` on the PostgreSQL server of
     SERVA_BENCH_POSTGRES_URL (a SQLAlchemy URL of any database there; default database `test`
     on 127.0.0.1:5432, as the tests): the schema by `serva.db.init_schema` (so everything a
     new PostgreSQL database gets), then every table's rows by COPY, the id sequences moved past
     them, ANALYZE. Account 1, the hot account, gets a top-up (a ledger row) so that it can pay
     for every order of the run;
  2. serves it with `serva serve --workers W --threads T` (gunicorn, the README's production
     command; W = 2, and 1 with --workers 2,1) and the bare endpoint with the same command,
     all on 127.0.0.1, wrk pinned to the last core (bench/run.py's Server and wrk helpers);
  3. measures each action against the bare endpoint in alternating slices (bench/run.py's
     Comparison): balance, services, add, status, status with 100 ids over the 10,000 accounts,
     and `add-hot`: every order on account 1's key, each to a distinct target;
  4. stops the servers and checks: no non-2xx or error body, no traceback in the server logs,
     `serva audit` passes (balance == sum(ledger) for every account, orders == their ledger
     rows), as many new orders as successful `add` answers at least, and the hot account's
     balance equals its ledger sum; then drops the database (always, also on failure).
Writes bench/results/postgres.json and .md; exits 1 when a check failed.
"""
import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402
import run  # noqa: E402

from sqlalchemy.engine import make_url  # noqa: E402

ROOT, BIN, RESULTS = run.ROOT, run.BIN, run.RESULTS
run.WORK = os.path.join(HERE, "data", "pg-run")  # the server logs and wrk summaries
ACTIONS = ["balance", "services", "add", "status", "status100", "add-hot"]
LABELS = {**run.LABELS, "add-hot": "add, one hot account"}
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HOT_ACCOUNT = 1
HOT_TOP_UP = 10_000_000 * gen.MICRO  # ten million USD: more than any run can spend
SKIPPED_TABLES = {"serva_meta"}  # init_schema writes its own


def libpq(url) -> str:
    """A SQLAlchemy URL as the conninfo psycopg takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server_url, name):
    import psycopg
    with psycopg.connect(libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url, name):
    import psycopg
    with psycopg.connect(libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load(url, sqlite_path) -> dict:
    """The SQLite dataset into the new PostgreSQL database: schema, rows, sequences, stats."""
    import psycopg
    from serva import db, schema
    engine = db.make_engine(url)
    db.init_schema(engine)
    engine.dispose()
    source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    counts = {}
    started = time.perf_counter()
    with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
        for table in schema.metadata.sorted_tables:
            if table.name in SKIPPED_TABLES:
                continue
            columns = ", ".join(column.name for column in table.columns)
            rows = source.execute(f"SELECT {columns} FROM {table.name}")
            n = 0
            # SQLite's 0/1 booleans are valid boolean input for COPY's text format
            with cur.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
            counts[table.name] = n
            if n and "id" in table.c and table.c.id.primary_key:
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"(SELECT max(id) FROM {table.name}))")
        stamp = int(time.time())
        cur.execute("INSERT INTO ledger (account_id, amount, kind, note, created_at) "
                    "VALUES (%s, %s, 'topup', 'bench: the hot account', %s)",
                    (HOT_ACCOUNT, HOT_TOP_UP, stamp))
        cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s",
                    (HOT_TOP_UP, HOT_ACCOUNT))
    source.close()
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("ANALYZE")
    return {"rows": counts, "load_seconds": round(time.perf_counter() - started, 1)}


def query(url, sql, params=()):
    import psycopg
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(sql, params).fetchone()


def audit(url) -> dict:
    env = {**os.environ, "SERVA_DATABASE_URL": url, "SERVA_SECRET_KEY": "bench"}
    done = subprocess.run([os.path.join(BIN, "serva"), "audit"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    return {"ok": done.returncode == 0, "output": (done.stdout + done.stderr).strip()[-2000:]}


def markdown(results) -> str:
    s = results["settings"]
    lines = [f"`make bench-pg`, {results['generated_at']}, {results['machine']['cpus']} cores, "
             f"PostgreSQL {results['machine']['postgresql']}: {s['connections']} connections, "
             f"`serva serve --threads {s['threads']}`, {s['orders']:,} orders stored; each figure "
             f"the median of {s['rounds']} rounds of {s['slices']} alternating {s['slice_s']} s "
             f"slices of the action and the bare endpoint (same server command). Load average "
             f"before / after: {results['load_before']} / {results['load_after']}.", "",
             "| workers | action | req/s | p50 ms | p99 ms | bare req/s | ratio to bare "
             "| wrk CPU (of its core) |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for workers, actions in results["servers"].items():
        for action, a in actions.items():
            lines.append(f"| {workers} | {LABELS[action]} | {a['rps']:.0f} | {a['p50_ms']:.1f} | "
                         f"{a['p99_ms']:.1f} | {a['bare_rps']:.0f} | {a['ratio']:.2f} | "
                         f"{a['wrk_core_share']:.0%} |")
    c = results["checks"]
    lines += ["", f"Correctness: {c['responses']} responses checked, {c['bad_responses']} non-2xx "
              f"or error bodies, {c['tracebacks']} tracebacks in the server logs, `serva audit` "
              f"{'passed' if c['audit_ok'] else 'FAILED'}, {c['orders_added']} orders created "
              f"for {c['add_ok']} successful `add` answers, hot account balance "
              f"{'==' if c['hot_balance_ok'] else '!='} its ledger sum: "
              f"{'all green' if c['ok'] else 'FAILED'}."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description="The bench actions on PostgreSQL.")
    parser.add_argument("--orders", type=int, default=int(os.environ.get("BENCH_PG_ORDERS", 1_000_000)))
    parser.add_argument("--workers", default=os.environ.get("BENCH_PG_WORKERS", "2"),
                        help="comma-separated worker counts, e.g. 2,1")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--slices", type=int, default=int(os.environ.get("BENCH_SLICES", 2)))
    parser.add_argument("--slice", dest="slice_s", type=int,
                        default=int(os.environ.get("BENCH_SLICE_SECONDS", 2)))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--actions", default=",".join(ACTIONS))
    parser.add_argument("--hot-only-for", default="1",
                        help="worker counts measured on add-hot only (comma-separated)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "postgres.json"))
    args = parser.parse_args()
    actions = [a for a in args.actions.split(",") if a]
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    hot_only = {int(w) for w in args.hot_only_for.split(",") if w}
    if shutil.which("wrk") is None:
        run.say("wrk is not installed. On Debian/Ubuntu: sudo apt-get install -y wrk")
        return 2

    started = time.monotonic()
    server_url = os.environ.get("SERVA_BENCH_POSTGRES_URL", DEFAULT_URL)
    name = f"serva_bench_{os.getpid()}"
    run.say(f"dataset ({args.orders:,} orders; built once, then cached in bench/data/) ...")
    data = gen.build(orders=args.orders)
    shutil.rmtree(run.WORK, ignore_errors=True)
    os.makedirs(run.WORK)
    hot = {**data, "keys": os.path.join(run.WORK, "hot.keys")}
    with open(data["keys"]) as source, open(hot["keys"], "w") as target:
        target.write(source.readline())  # line 1: account 1's key
    servers, url = {}, None
    try:
        url = create_database(server_url, name)
        run.say(f"loading it into PostgreSQL database {name} ...")
        loaded = load(url, data["db"])
        run.say(f"loaded in {loaded['load_seconds']} s: {loaded['rows']}")
        before = query(url, "SELECT count(*) FROM orders")[0]
        env = {"SERVA_DATABASE_URL": url, "SERVA_SECRET_KEY": "bench", **run.BENCH_LIMITS}
        serve = [os.path.join(BIN, "serva"), "serve", "--port", "{port}", "--threads", str(args.threads)]
        bare = [os.path.join(BIN, "python"), "-m", "serva.serve", "--port", "{port}",
                "--threads", str(args.threads)]
        comparisons = []
        for workers in worker_counts:
            servers[f"app{workers}"] = run.Server(f"app{workers}", [*serve, "--workers", str(workers)],
                                                  env, ROOT)
            servers[f"bare{workers}"] = run.Server(f"bare{workers}", [*bare, "--workers", str(workers),
                                                                      "bare:app"], {}, HERE)
            for action in actions:
                if workers in hot_only and action != "add-hot":
                    continue
                mode, dataset = ("add", hot) if action == "add-hot" else (action, data)
                comparison = run.Comparison(f"{action}@{workers}", (f"app{workers}", mode, dataset),
                                            (f"bare{workers}", "bare", data), "action")
                comparison.action, comparison.workers = action, workers
                comparisons.append(comparison)
        probe = f"action=balance&key={open(data['keys']).readline().strip()}".encode()
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready(probe)
        load_before = run.load_average()
        run.say(f"servers up ({', '.join(servers)}), load {load_before}; warming up ...")
        warmed = set()
        for comparison in comparisons:
            for server, mode, dataset in (comparison.a, comparison.b):
                if (server, mode) not in warmed:
                    warmed.add((server, mode))
                    run.wrk(servers[server], mode, 1, args.connections, dataset, f"warm-{server}-{mode}")
        for round_no in range(1, args.rounds + 1):
            for comparison in comparisons:
                got = comparison.run_round(servers, args.slices, args.slice_s, args.connections,
                                           round_no)
                a, b = run.combine(got["a"]), run.combine(got["b"])
                bad = a["bad"] + b["bad"]
                flag = "" if bad == 0 else f"  <-- {bad} bad: {a['first_bad'] or b['first_bad']}"
                run.say(f"round {round_no} {comparison.name:16s} {a['rps']:7.1f} / {b['rps']:7.1f} "
                        f"req/s  p50 {a['p50_ms']:6.1f} p99 {a['p99_ms']:6.1f} ms  wrk CPU "
                        f"{a['wrk_core_share']:.0%}{flag}")
        load_after = run.load_average()
    finally:
        for server in servers.values():
            server.stop()
    if url is None:
        return 1
    try:
        run.say("checking: audit, server logs, orders created, the hot account ...")
        audited = audit(url)
        logs = {n: run.log_problems(server.log_path) for n, server in servers.items()}
        added = query(url, "SELECT count(*) FROM orders")[0] - before
        hot_balance, hot_sum = query(url, "SELECT balance, (SELECT sum(amount) FROM ledger WHERE "
                                          "account_id = %s) FROM accounts WHERE id = %s",
                                     (HOT_ACCOUNT, HOT_ACCOUNT))
        pg_version = query(url, "SHOW server_version")[0]
    finally:
        drop_database(server_url, name)
        run.say(f"dropped database {name}")

    results = {"generated_at": time.strftime("%Y-%m-%d %H:%M %Z"),
               "machine": {"cpus": os.cpu_count(), "postgresql": pg_version},
               "settings": {"rounds": args.rounds, "slices": args.slices, "slice_s": args.slice_s,
                            "connections": args.connections, "threads": args.threads,
                            "orders": args.orders, "workers": worker_counts,
                            "load_seconds": loaded["load_seconds"]},
               "load_before": load_before, "load_after": load_after, "servers": {}}
    for comparison in comparisons:
        summary = run.summarize(comparison)
        results["servers"].setdefault(str(comparison.workers), {})[comparison.action] = {
            **summary["a"], "ratio": summary["ratio"], "ratios": summary["ratios"],
            "bare_rps": summary["b"]["rps"]}
    slices = [r for c in comparisons for rnd in c.rounds for side in rnd.values() for r in side]
    add_ok = sum(r["ok"] for c in comparisons for rnd in c.rounds if c.a[1] == "add"
                 for r in rnd["a"])
    checks = {"responses": sum(r["requests"] for r in slices),
              "bad_responses": sum(r["bad"] for r in slices),
              "tracebacks": sum(v["tracebacks"] for v in logs.values()), "logs": logs,
              "audit_ok": audited["ok"], "audit": audited, "orders_added": added, "add_ok": add_ok,
              "hot_balance_ok": hot_balance == hot_sum}
    # warm-up orders come on top, and an order whose answer wrk did not read still counts
    checks["ok"] = (checks["bad_responses"] == 0 and checks["tracebacks"] == 0
                    and audited["ok"] and added >= add_ok and checks["hot_balance_ok"])
    results["checks"] = checks
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    table = markdown(results)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as handle:
        handle.write(table)
    print(table)
    run.say(f"results: {os.path.relpath(args.out, ROOT)} (elapsed {results['elapsed_s']} s)")
    if not checks["ok"]:
        run.say("CORRECTNESS CHECK FAILED: " + json.dumps({k: v for k, v in checks.items()
                                                         if k not in ("logs",)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
