"""`make bench`: every API action against the bare stack, in one run, with correctness checks.

What it does (bench/README.md explains the method and the results):
  1. builds or reuses the cached datasets (bench/gen.py): 10,000 accounts, 500 services and
     1,000,000 orders, and the same with 1,000 orders for the history comparison;
  2. copies them into bench/data/run/ and starts, all on 127.0.0.1:
       app      Serva with the README's production command, one worker process:
                serva serve --workers 1 --threads T   (gunicorn, one gthread worker;
                on the 1M-order copy)
       bare     bench/bare.py, one Flask route returning constant JSON, with the same server
                and settings: python -m serva.serve --workers 1 --threads T bare:app
       small    Serva like `app`, on the 1,000-order copy
       workers  serva serve --workers N --threads T (one worker per core), own 1M-order copy
       normal   Serva like `app` with SERVA_SQLITE_SYNCHRONOUS=NORMAL, on the app's copy
       nolimits Serva like `app` with the rate limits off, on the app's copy (every other
                server runs with limits far above the load: BENCH_LIMITS), for the limiter's
                cost on `balance`
       floor    bench/reference.py, the least a Flask endpoint does for `balance` and `add` on
                Serva's schema (raw sqlite3, group-committed orders), served like `bare`, on
                its own 1M-order copy
     wrk runs pinned to the last core, so that the load generator stays on one core (the
     servers are not pinned).
  3. warms each up, then runs ROUNDS rounds of comparisons; a comparison drives two or three
     (server, action) pairs with wrk at CONNECTIONS connections in slices taken in turn
     (each action with the bare endpoint and its floor), so all sides see the same machine
     (bench/api.lua builds the requests and counts every response that is not 2xx or carries
     an "error" key);
  4. stops the servers, runs `serva audit` on every database copy (the floor's too), greps the
     server logs for "database is locked" (the key-use flush's retried write counted apart)
     and tracebacks, and counts the orders `add` created
     in each database;
  5. reports medians over the rounds: req/s, p50, p99, the ratio to the bare endpoint and to
     the action's floor, the floors' own ratio to bare, the targets, the peak RSS of the
     server processes; writes bench/results/latest.json and
     bench/results/latest.md. Exits 1 when a correctness check failed.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen  # noqa: E402

BIN = os.path.join(ROOT, ".venv", "bin")
RESULTS = os.path.join(HERE, "results")
WORK = os.path.join(HERE, "data", "run")
LUA = os.path.join(HERE, "api.lua")

ACTIONS = ["balance", "services", "add", "status", "status100"]
TARGETS = {"balance": 0.55, "services": 0.45, "add": 0.30, "status": 0.55, "status100": 0.25}
# Each action's floor on bench/reference.py: reads against the least a `balance` does, `add`
# against the least an order does.
FLOOR_OF = {"balance": "balance", "services": "balance", "add": "add", "status": "balance",
            "status100": "balance"}
ADD_P99_MS = 100
HISTORY_TARGET = 0.9
MULTICORE_TARGET = 1.6
RSS_TARGET_MIB = 100
LIMITER_COST_TARGET_PCT = 5
# The servers run with the rate limits on, far above what wrk sends (one key can see thousands
# of requests a second here), so the limiter's work is measured and never answers 429.
BENCH_LIMITS = {"SERVA_RATE_LIMIT_PER_KEY": "1000000/second",
                "SERVA_RATE_LIMIT_INVALID_KEYS": "1000000/minute"}
LABELS = {"balance": "balance", "services": "services", "add": "add",
          "status": "status (1 id)", "status100": "status (100 ids)"}


def load_average() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "?"


def say(message):
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- servers

class Server:
    def __init__(self, name, argv, env, cwd, db_path=None):
        self.name, self.argv, self.cwd, self.db_path = name, argv, cwd, db_path
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **env}
        self.log_path = os.path.join(WORK, f"{name}.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, body: bytes, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} server exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url, data=body, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{self.name} server did not answer in {timeout}s; see {self.log_path}")

    def pids(self) -> list:
        """The server process and its children (the workers of `serva serve`)."""
        if self.proc is None:
            return []
        out = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as handle:
                out += [int(p) for p in handle.read().split()]
        except OSError:
            pass
        return out

    def peak_rss_mib(self) -> dict:
        """VmHWM (peak resident set) of each process, MiB."""
        peaks = {}
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            peaks[pid] = round(int(line.split()[1]) / 1024, 1)
            except OSError:
                pass
        return peaks

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.log.close()


# ---------------------------------------------------------------- wrk

def _wrk_core():
    """Pin wrk to the last core (the load generator stays on one core)."""
    try:
        available = sorted(os.sched_getaffinity(0))
        if len(available) > 1:
            os.sched_setaffinity(0, {available[-1]})
    except (AttributeError, OSError):
        pass


def wrk(server, mode, duration, connections, dataset, out_name):
    out = os.path.join(WORK, out_name + ".json")
    if os.path.exists(out):
        os.remove(out)
    env = {**os.environ, "BENCH_MODE": "balance" if mode == "bare" else mode,
           "BENCH_KEYS": dataset["keys"], "BENCH_STATUS": dataset["status"],
           "BENCH_SERVICES": dataset["service_ids"], "BENCH_OUT": out,
           "BENCH_NONCE": f"{int(time.time() * 1000)}-{out_name}"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                    "-s", LUA, server.url], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=duration + 60, preexec_fn=_wrk_core)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out) as handle:
        result = json.load(handle)
    # the load generator's own CPU time: on 2 cores it competes with the second worker
    result["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["bad"] = (result["bad_status"] + result["bad_body"] + result["socket_errors"]
                     + result["timeouts"])
    return result


# ---------------------------------------------------------------- checks

def audit(db_path) -> dict:
    env = {**os.environ, "SERVA_DATABASE_URL": f"sqlite:///{db_path}", "SERVA_SECRET_KEY": "bench"}
    done = subprocess.run([os.path.join(BIN, "serva"), "audit"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return {"ok": done.returncode == 0, "output": (done.stdout + done.stderr).strip()[-2000:]}


def order_count(db_path) -> int:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM orders").fetchone()[0]
    finally:
        con.close()


# The one "database is locked" that is not a failure: the background write of keys' last-used
# times found the database busy (another process writing) and tries again a second later
# (serva/auth.py); no request waited for it or saw it. Counted apart, as information.
UPKEEP_RETRY = "could not record key use yet"


def log_problems(path) -> dict:
    locked = tracebacks = errors = upkeep_retries = 0
    with open(path, errors="replace") as handle:
        for line in handle:
            if UPKEEP_RETRY in line:
                upkeep_retries += 1
            elif "database is locked" in line:
                locked += 1
            if line.startswith("Traceback"):
                tracebacks += 1
            if " ERROR " in line:
                errors += 1
    return {"database_locked": locked, "tracebacks": tracebacks, "error_lines": errors,
            "upkeep_retries": upkeep_retries}


# ---------------------------------------------------------------- measurement

class Comparison:
    """Two (server, action) pairs measured in alternating slices, so that both see the same
    machine: on a shared 2-core VM the speed of the CPU drifts by 2-3x within minutes, and a
    ratio of two measurements taken a minute apart would mostly measure that drift.

    With a third pair `c` (the action's floor) the three take turns in a rotating order
    (a b c, b c a, c a b, ...): over three slices each side's slices sit at the same mean time,
    so a drift that is linear over a round biases no ratio between them. Every ratio (a/b,
    a/c, c/b) is taken per round from these interleaved slices, then the median of the rounds."""

    def __init__(self, name, a, b, kind, c=None):
        # a, b, c: (server, action, dataset)
        self.name, self.a, self.b, self.c, self.kind = name, a, b, c, kind
        self.sides = ("a", "b") if c is None else ("a", "b", "c")
        self.rounds = []  # per round: {"a": [slice results], "b": [...](, "c": [...])}

    def run_round(self, servers, slices, slice_s, connections, round_no):
        got = {side: [] for side in self.sides}
        for i in range(slices):
            turn = i % len(self.sides)
            for side in self.sides[turn:] + self.sides[:turn]:
                server, action, dataset = getattr(self, side)
                got[side].append(wrk(servers[server], action, slice_s, connections, dataset,
                                     f"r{round_no}-{self.name}-{side}{i}"))
        self.rounds.append(got)
        return got


def combine(slices):
    """One figure for a round from its slices: req/s over all of them, median latencies."""
    requests = sum(r["requests"] for r in slices)
    seconds = sum(r["duration_us"] for r in slices) / 1e6
    return {"rps": requests / seconds, "requests": requests,
            "p50_ms": statistics.median(r["p50_ms"] for r in slices),
            "p99_ms": statistics.median(r["p99_ms"] for r in slices),
            "max_ms": max(r["max_ms"] for r in slices),
            "ok": sum(r["ok"] for r in slices), "bad": sum(r["bad"] for r in slices),
            "wrk_core_share": sum(r.get("wrk_cpu_s", 0) for r in slices) / seconds,
            "first_bad": next((r["first_bad"] for r in slices if r["first_bad"]), None)}


def median(values):
    values = list(values)
    return statistics.median(values) if values else None


def side_summary(rounds):
    return {"rps": round(median(r["rps"] for r in rounds), 1),
            "p50_ms": round(median(r["p50_ms"] for r in rounds), 2),
            "p99_ms": round(median(r["p99_ms"] for r in rounds), 2),
            "max_ms": round(max(r["max_ms"] for r in rounds), 2),
            "requests": sum(r["requests"] for r in rounds),
            "bad": sum(r["bad"] for r in rounds),
            "wrk_core_share": round(median(r["wrk_core_share"] for r in rounds), 2),
            "rounds_rps": [round(r["rps"], 1) for r in rounds]}


def summarize(comparison):
    a = [combine(r["a"]) for r in comparison.rounds]
    b = [combine(r["b"]) for r in comparison.rounds]
    ratios = [x["rps"] / y["rps"] for x, y in zip(a, b)]
    out = {"a": side_summary(a), "b": side_summary(b), "ratio": round(median(ratios), 3),
           "ratios": [round(x, 3) for x in ratios]}
    if getattr(comparison, "c", None) is not None:  # the floor: a / c and c / b per round
        c = [combine(r["c"]) for r in comparison.rounds]
        to_floor = [x["rps"] / y["rps"] for x, y in zip(a, c)]
        floor = [x["rps"] / y["rps"] for x, y in zip(c, b)]
        out.update(c=side_summary(c), ratio_to_floor=round(median(to_floor), 3),
                   ratios_to_floor=[round(x, 3) for x in to_floor],
                   floor_ratio=round(median(floor), 3), floor_ratios=[round(x, 3) for x in floor])
    return out


# ---------------------------------------------------------------- report

def markdown(results) -> str:
    s = results["settings"]
    floors = results.get("floors", {})
    sides = "the action, the bare endpoint and the action's floor" if floors else \
        "the action and the bare endpoint"
    lines = [f"`make bench`, {results['generated_at']}, {results['machine']['cpus']} cores "
             f"(load average {results.get('load_before', '?')} before, "
             f"{results.get('load_after', '?')} after): {s['connections']} connections, "
             f"{s['server']}, {s['threads']} threads, SQLite synchronous={s['synchronous']}; "
             f"each figure is the median of {s['rounds']} rounds, each round {s['slices']} "
             f"{s['slice_s']} s slices of {sides} in turn; each ratio is taken per round, "
             f"then the median.", "",
             "| action | req/s | p50 ms | p99 ms | bare req/s (same slices) | ratio to bare "
             "| floor req/s (same slices) | ratio to floor | target | met |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for action in ACTIONS:
        a = results["actions"].get(action)
        if a is None:
            continue
        target = f"≥ {a['target']:.2f}" + (f", p99 ≤ {ADD_P99_MS} ms" if action == "add" else "")
        floor = (f"{a['floor_rps']:.0f} ({a['floor']}) | **{a['ratio_to_floor']:.2f}**"
                 if "floor" in a else " | ")
        lines.append(f"| {LABELS[action]} | {a['rps']:.0f} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} "
                     f"| {a['bare_rps']:.0f} | **{a['ratio']:.2f}** | {floor} | {target} | "
                     f"{'yes' if a['met'] else 'NO'} |")
    for name, f in floors.items():
        lines.append(f"| *{name} floor* (bench/reference.py) | {f['rps']:.0f} | {f['p50_ms']:.1f} "
                     f"| {f['p99_ms']:.1f} | {f['bare_rps']:.0f} | *{f['ratio']:.2f}* "
                     f"({min(f['ratios']):.2f}–{max(f['ratios']):.2f} in {len(f['ratios'])} "
                     f"rounds) | | 1.00 | | |")
    bare = results["bare"]
    lines.append(f"| *bare Flask endpoint* | {bare['rps']:.0f} | {bare['p50_ms']:.1f} | "
                 f"{bare['p99_ms']:.1f} | | 1.00 | | | | |")
    lines += ["", "| check | measured | target | met |", "|---|---|---:|:---:|"]
    for name, h in results.get("history", {}).items():
        lines.append(f"| {name}: 1,000,000 orders stored / 1,000 orders | **{h['ratio']:.2f}** "
                     f"({h['rps_1m']:.0f} / {h['rps_1k']:.0f} req/s) | ≥ {HISTORY_TARGET} | "
                     f"{'yes' if h['met'] else 'NO'} |")
    m = results.get("multicore")
    if m:
        lines.append(f"| balance: `{m['command']}` / single process | **{m['ratio']:.2f}** "
                     f"({m['rps']:.0f} / {m['single_rps']:.0f} req/s; wrk itself used "
                     f"{m.get('wrk_core_share', 0):.0%} of the second core) | ≥ {MULTICORE_TARGET} | "
                     f"{'yes' if m['met'] else 'NO'} |")
    lines.append(f"| peak RSS of the single server process (VmHWM) | {results['peak_rss_mib']:.1f} MiB "
                 f"| ≤ {RSS_TARGET_MIB} MiB | {'yes' if results['peak_rss_mib'] <= RSS_TARGET_MIB else 'NO'} |")
    if m:
        lines.append(f"| peak RSS of the largest `serve` worker | {m['peak_rss_mib_max_worker']:.1f} MiB "
                     f"| ≤ {RSS_TARGET_MIB} MiB | "
                     f"{'yes' if m['peak_rss_mib_max_worker'] <= RSS_TARGET_MIB else 'NO'} |")
    r = results.get("rate_limits")
    if r:
        lines.append(f"| balance with rate limits ({r['limits']}) / limits off | "
                     f"{r['ratio']:.3f} ({r['rps']:.0f} / {r['off_rps']:.0f} req/s: limiter cost "
                     f"{r['cost_pct']:.1f} %) | ≤ {LIMITER_COST_TARGET_PCT} % | "
                     f"{'yes' if r['cost_pct'] <= LIMITER_COST_TARGET_PCT else 'NO'} |")
    n = results.get("sync_normal")
    if n:
        lines.append(f"| add with SERVA_SQLITE_SYNCHRONOUS=NORMAL (not the default) / FULL | "
                     f"{n['ratio_to_full']:.2f} ({n['rps']:.0f} / {n['full_rps']:.0f} req/s; "
                     f"p99 {n['p99_ms']:.1f} / {n['full_p99_ms']:.1f} ms) | information | |")
    c = results["checks"]
    per_db = ", ".join(f"{name}: {added} / {c['add_ok_by_db'][name]}"
                       for name, added in c["orders_added_by_db"].items())
    lines += ["", f"Correctness: {c['responses']} responses checked, {c['bad_responses']} non-2xx or "
              f"error bodies, {c['database_locked']} \"database is locked\", {c['tracebacks']} "
              f"tracebacks in the server logs ({c.get('upkeep_retries', 0)} last-used write(s) "
              f"retried a second later: not a failure), `serva audit` "
              f"{'passed' if c['audit_ok'] else 'FAILED'} on every database "
              f"({', '.join(c['audits'])}), orders created / successful `add` responses per "
              f"database: {per_db}: {'all green' if c['ok'] else 'FAILED'}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description="Benchmark every action against the bare stack.")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--slices", type=int, default=int(os.environ.get("BENCH_SLICES", 3)),
                        help="alternating slices of each side per round")
    parser.add_argument("--slice", dest="slice_s", type=int,
                        default=int(os.environ.get("BENCH_SLICE_SECONDS", 1)))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", 8)),
                        help="waitress threads, for Serva and the bare endpoint alike")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--actions", default=",".join(ACTIONS),
                        help="comma-separated subset of " + ",".join(ACTIONS))
    parser.add_argument("--no-history", action="store_true", help="skip 1M vs 1k orders")
    parser.add_argument("--no-multicore", action="store_true", help="skip serva serve --workers")
    parser.add_argument("--no-sync-compare", action="store_true",
                        help="skip add with synchronous=NORMAL")
    parser.add_argument("--no-limit-compare", action="store_true",
                        help="skip balance with the rate limits off")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the floors (bench/reference.py) beside each action")
    parser.add_argument("--out", default=os.path.join(RESULTS, "latest.json"))
    args = parser.parse_args()
    actions = [a for a in args.actions.split(",") if a]

    if shutil.which("wrk") is None:
        say("wrk is not installed. On Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y wrk")
        return 2
    started = time.monotonic()
    say("datasets (built once, then cached in bench/data/) ...")
    big = gen.build(orders=1_000_000)
    small = gen.build(orders=1_000)

    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    copies = {"app": big["db"]}
    if not args.no_floor:
        copies["floor"] = big["db"]
    if not args.no_history:
        copies["small"] = small["db"]
    if not args.no_multicore:
        copies["workers"] = big["db"]
    for name, source in list(copies.items()):
        copies[name] = os.path.join(WORK, f"{name}.sqlite")
        shutil.copyfile(source, copies[name])
    before = {name: order_count(path) for name, path in copies.items()}

    def app_env(db, **extra):
        return {"SERVA_DATABASE_URL": f"sqlite:///{db}", "SERVA_SECRET_KEY": "bench",
                **BENCH_LIMITS, **extra}

    serva = [os.path.join(BIN, "serva"), "serve", "--port", "{port}", "--threads", str(args.threads)]
    single = [*serva, "--workers", "1"]
    # the bare endpoint and the floors: served by the same code with the same settings as Serva
    like_serva = [os.path.join(BIN, "python"), "-m", "serva.serve", "--port", "{port}",
                  "--threads", str(args.threads), "--workers", "1"]
    servers = {
        "app": Server("app", single, app_env(copies["app"]), ROOT, copies["app"]),
        "bare": Server("bare", [*like_serva, "bare:app"], {}, HERE),
    }
    if not args.no_floor:
        servers["floor"] = Server("floor", [*like_serva, "reference:app"],
                                  {"SERVA_BENCH_DB": copies["floor"]}, HERE, copies["floor"])
    comparisons = [Comparison(action, ("app", action, big), ("bare", "bare", big), "action",
                              None if args.no_floor else ("floor", FLOOR_OF[action], big))
                   for action in actions]
    if not args.no_history:
        servers["small"] = Server("small", single, app_env(copies["small"]), ROOT, copies["small"])
        comparisons += [Comparison(f"history-{action}", ("app", action, big), ("small", action, small),
                                   "history") for action in ("add", "status")]
    if not args.no_multicore:
        servers["workers"] = Server("workers", [*serva, "--workers", str(args.workers)],
                                    app_env(copies["workers"]), ROOT, copies["workers"])
        comparisons.append(Comparison("multicore", ("workers", "balance", big),
                                      ("app", "balance", big), "multicore"))
    if not args.no_sync_compare:
        servers["normal"] = Server("normal", single,
                                   app_env(copies["app"], SERVA_SQLITE_SYNCHRONOUS="NORMAL"), ROOT,
                                   copies["app"])
        comparisons.append(Comparison("sync-normal", ("normal", "add", big), ("app", "add", big),
                                      "sync"))
    if not args.no_limit_compare:
        servers["nolimits"] = Server("nolimits", single, app_env(
            copies["app"], SERVA_RATE_LIMIT_PER_KEY="", SERVA_RATE_LIMIT_INVALID_KEYS=""), ROOT,
            copies["app"])
        comparisons.append(Comparison("rate-limits", ("app", "balance", big),
                                      ("nolimits", "balance", big), "limits"))
    key = open(big["keys"]).readline().strip()
    probe = f"action=balance&key={key}".encode()
    load_before = load_average()
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready(probe)
        say(f"servers up ({', '.join(f'{n}:{s.port}' for n, s in servers.items())}); warming up ...")
        warmed = set()
        for comparison in comparisons:
            for server, action, dataset in (getattr(comparison, s) for s in comparison.sides):
                if (server, action) not in warmed:
                    warmed.add((server, action))
                    wrk(servers[server], action, 1, args.connections, dataset, f"warm-{server}-{action}")
        for round_no in range(1, args.rounds + 1):
            for comparison in comparisons:
                got = comparison.run_round(servers, args.slices, args.slice_s, args.connections,
                                           round_no)
                sides = {side: combine(got[side]) for side in comparison.sides}
                a, b, c = sides["a"], sides["b"], sides.get("c")
                bad = sum(x["bad"] for x in sides.values())
                first = next((x["first_bad"] for x in sides.values() if x["first_bad"]), None)
                flag = "" if bad == 0 else f"  <-- {bad} bad: {first}"
                floor = "" if c is None else (f"   floor {c['rps']:7.1f}: action/floor "
                                              f"{a['rps'] / c['rps']:5.2f}, floor/bare "
                                              f"{c['rps'] / b['rps']:5.2f}")
                say(f"round {round_no} {comparison.name:16s} {a['rps']:7.1f} / {b['rps']:7.1f} req/s "
                    f"= {a['rps'] / b['rps']:5.2f}   p50 {a['p50_ms']:6.1f} p99 {a['p99_ms']:6.1f} ms"
                    f"{floor}{flag}")
        rss = {name: server.peak_rss_mib() for name, server in servers.items()}
        load_after = load_average()
    finally:
        for server in servers.values():
            server.stop()

    say("checking: audit on every database, server logs, orders created ...")
    audits = {name: audit(path) for name, path in copies.items()}
    logs = {name: log_problems(server.log_path) for name, server in servers.items()}
    added = {name: order_count(path) - before[name] for name, path in copies.items()}

    results = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version, "platform": platform.platform()},
        "load_before": load_before, "load_after": load_after,
        "settings": {"rounds": args.rounds, "slices": args.slices, "slice_s": args.slice_s,
                     "server": "gunicorn gthread, one worker process",
                     "connections": args.connections, "threads": args.threads,
                     "workers": args.workers, "synchronous": "FULL",
                     "server_command": f"serva serve --workers 1 --threads {args.threads}",
                     "bare_command": f"python -m serva.serve --workers 1 --threads {args.threads} "
                                     "bare:app  (in bench/)",
                     "floor_command": None if args.no_floor else
                     f"python -m serva.serve --workers 1 --threads {args.threads} reference:app  "
                     "(in bench/; own 1M-order copy)",
                     "datasets": {"big": {k: big[k] for k in ("name", "accounts", "services", "orders")},
                                  "small": {k: small[k] for k in ("name", "accounts", "services", "orders")}}},
        "actions": {},
    }
    bare_rounds = []
    floor_rounds = {}  # floor -> per round: (its combined slices, its bare's combined slices)
    for comparison in comparisons:
        summary = summarize(comparison)
        if comparison.kind == "action":
            action = comparison.name
            entry = {**summary["a"], "ratio": summary["ratio"], "ratios": summary["ratios"],
                     "bare_rps": summary["b"]["rps"], "target": TARGETS[action]}
            entry["met"] = entry["ratio"] >= TARGETS[action] and (
                action != "add" or entry["p99_ms"] <= ADD_P99_MS)
            if comparison.c is not None:
                floor = comparison.c[1]
                entry.update(floor=floor, floor_rps=summary["c"]["rps"],
                             ratio_to_floor=summary["ratio_to_floor"],
                             ratios_to_floor=summary["ratios_to_floor"],
                             floor_ratio_same_rounds=summary["floor_ratio"])
                floor_rounds.setdefault(floor, []).extend(
                    (combine(r["c"]), combine(r["b"])) for r in comparison.rounds)
            results["actions"][action] = entry
            bare_rounds += [combine(r["b"]) for r in comparison.rounds]
        elif comparison.kind == "history":
            action = comparison.name.split("-", 1)[1]
            results.setdefault("history", {})[action] = {
                "rps_1m": summary["a"]["rps"], "rps_1k": summary["b"]["rps"],
                "p99_ms_1m": summary["a"]["p99_ms"], "p99_ms_1k": summary["b"]["p99_ms"],
                "ratio": summary["ratio"], "ratios": summary["ratios"], "target": HISTORY_TARGET,
                "met": summary["ratio"] >= HISTORY_TARGET}
        elif comparison.kind == "multicore":
            worker_rss = [mib for pid, mib in rss["workers"].items()
                          if pid != servers["workers"].proc.pid]
            results["multicore"] = {
                "workers": args.workers, "threads": args.threads,
                "command": f"serva serve --workers {args.workers} --threads {args.threads}",
                **summary["a"], "single_rps": summary["b"]["rps"], "ratio": summary["ratio"],
                "ratios": summary["ratios"], "target": MULTICORE_TARGET,
                "met": summary["ratio"] >= MULTICORE_TARGET,
                "peak_rss_mib_workers": worker_rss,
                "peak_rss_mib_max_worker": max(worker_rss) if worker_rss else 0.0}
        elif comparison.kind == "limits":
            results["rate_limits"] = {
                **summary["a"], "off_rps": summary["b"]["rps"], "ratio": summary["ratio"],
                "ratios": summary["ratios"], "cost_pct": (1 - summary["ratio"]) * 100,
                "limits": BENCH_LIMITS["SERVA_RATE_LIMIT_PER_KEY"]}
        elif comparison.kind == "sync":
            results["sync_normal"] = {
                **summary["a"], "full_rps": summary["b"]["rps"], "full_p99_ms": summary["b"]["p99_ms"],
                "ratio_to_full": summary["ratio"], "ratios": summary["ratios"],
                "note": "SERVA_SQLITE_SYNCHRONOUS=NORMAL: no fsync per commit (not the default)"}
    results["bare"] = side_summary(bare_rounds) if bare_rounds else {}
    # Each floor over every round it ran in (the balance floor beside each read action):
    # floor / bare per round, then the median.
    results["floors"] = {}
    for floor, pairs in floor_rounds.items():
        ratios = [f["rps"] / b["rps"] for f, b in pairs]
        results["floors"][floor] = {
            **side_summary([f for f, _ in pairs]), "bare_rps": round(median(b["rps"] for _, b in pairs), 1),
            "ratio": round(median(ratios), 3), "ratios": [round(x, 3) for x in ratios],
            "note": "bench/reference.py: the least a Flask endpoint does for this action on "
                    "Serva's schema (raw sqlite3; orders group-committed)"}
    app_workers = [mib for pid, mib in rss["app"].items() if pid != servers["app"].proc.pid]
    results["peak_rss_mib"] = max(app_workers) if app_workers else 0.0  # the serving process
    results["peak_rss_mib_all"] = {name: list(values.values()) for name, values in rss.items()}

    all_slices = [r for c in comparisons for rnd in c.rounds for side in rnd.values() for r in side]
    db_name = {path: name for name, path in copies.items()}
    add_ok = {name: 0 for name in copies}
    for c in comparisons:
        for rnd in c.rounds:
            for side in c.sides:
                server, action, _ = getattr(c, side)
                if action == "add":
                    add_ok[db_name[servers[server].db_path]] += sum(r["ok"] for r in rnd[side])
    checks = {
        "responses": sum(r["requests"] for r in all_slices),
        "bad_responses": sum(r["bad"] for r in all_slices),
        "database_locked": sum(v["database_locked"] for v in logs.values()),
        "upkeep_retries": sum(v["upkeep_retries"] for v in logs.values()),
        "tracebacks": sum(v["tracebacks"] for v in logs.values()),
        "logs": logs,
        "audit_ok": all(a["ok"] for a in audits.values()),
        "audits": audits,
        "orders_added": sum(added.values()),
        "add_ok": sum(add_ok.values()),
        "orders_added_by_db": added,
        "add_ok_by_db": add_ok,
    }
    # Every successful add is an order in its database (warm-up orders come on top, and a
    # request in flight when wrk stopped may have completed without wrk reading the answer).
    checks["orders_match"] = all(added[name] >= add_ok[name] for name in copies)
    checks["ok"] = (checks["bad_responses"] == 0 and checks["database_locked"] == 0
                    and checks["tracebacks"] == 0 and checks["audit_ok"] and checks["orders_match"])
    results["checks"] = checks
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    table = markdown(results)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as handle:
        handle.write(table)
    if os.path.dirname(os.path.abspath(args.out)) == RESULTS:  # a trial elsewhere is no history
        with open(os.path.join(RESULTS, "history.md"), "a") as handle:
            handle.write(history_row(results) + "\n")
    for path in copies.values():  # the logs stay in bench/data/run/ for a look; the copies go
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    print(table)
    say(f"results: {os.path.relpath(args.out, ROOT)} (elapsed {results['elapsed_s']} s)")
    if not checks["ok"]:
        say("CORRECTNESS CHECK FAILED: " + json.dumps({k: v for k, v in checks.items()
                                                         if k not in ("audits", "logs")}))
        return 1
    return 0


def history_row(results) -> str:
    """This run's line of bench/results/history.md (date, commit, each ratio, add's p99, two
    workers over one, peak RSS)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "?"
    actions = results["actions"]
    ratios = [f"{actions[name]['ratio']:.2f}" for name in ("balance", "services", "add")]
    cells = [time.strftime("%Y-%m-%d %H:%M", time.gmtime()), commit, *ratios,
             f"{actions['add']['p99_ms']:.0f}", f"{actions['status']['ratio']:.2f}",
             f"{actions['status100']['ratio']:.2f}", f"{results['multicore']['ratio']:.2f}",
             f"{results['peak_rss_mib']:.0f}", ""]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
