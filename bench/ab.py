"""`make bench-ab A=dir B=dir`: two checkouts of Serva served side by side, their req/s compared
in alternating slices: the measure of one change on a machine whose speed drifts.

Each checkout (a git worktree, say) is served as `make bench` serves Serva (`serva serve
--workers 1`, 8 threads, the rate limits on, its own copy of the 1M-order dataset), with
PYTHONPATH set to it so that its own `serva` package answers. The dataset is built by A's own
bench/gen.py, at A's schema; B's copy is then upgraded by B's `serva init-db` (its migrations,
which keep every row), so A may be an earlier release than B. wrk then loads A and B in turn,
one slice each, ROUNDS times per action (bench/run.py's wrk, slices and checks), and the figure
per action is the median over rounds of B's req/s over A's, with each round's ratio, of
B's server CPU time per request over A's (from /proc; as noisy here as req/s), and each
side's context switches per request (every thread's, from /proc). On this
shared 2-core VM one slice moves by several per cent between minutes, on a bad hour by tens,
so a change is only as real as the share of rounds that agree (bench/README.md, item 25).

    python bench/ab.py A_DIR B_DIR [--rounds 6] [--slice 1] [action ...]
    python bench/ab.py . . --env-b SERVA_SQLITE_SYNCHRONOUS=NORMAL add     # a setting, same code
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402
import run  # noqa: E402


def cpu_seconds(server) -> float:
    """User + system CPU time of the server's processes so far (clock ticks of /proc)."""
    ticks = 0
    for pid in server.pids():
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def context_switches(server) -> int:
    """Context switches of every thread of the server's processes so far (/proc, per task)."""
    total = 0
    for pid in server.pids():
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/status") as handle:
                    total += sum(int(line.split()[1]) for line in handle
                                 if "ctxt_switches:" in line)
            except OSError:  # a thread that ended meanwhile
                pass
    return total


def slice_of(server, action, args, data, name) -> dict:
    """One wrk slice, with the server's CPU time and context switches per request (a second
    and a third view of the same slice)."""
    before, switches = cpu_seconds(server), context_switches(server)
    result = run.combine([run.wrk(server, action, args.slice_s, args.connections, data, name)])
    requests = max(result["requests"], 1)
    result["cpu_us"] = (cpu_seconds(server) - before) / requests * 1e6
    result["switches"] = (context_switches(server) - switches) / requests
    return result


def dataset_of(tree: str) -> dict:
    """The 1M-order dataset as `tree`'s bench/gen.py builds it (cached in its bench/data/)."""
    if os.path.samefile(tree, run.ROOT):
        return gen.build(orders=1_000_000)
    built = subprocess.run([os.path.join(run.BIN, "python"), os.path.join("bench", "gen.py")],
                           cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True,
                           capture_output=True, text=True)
    return json.loads(built.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="checkout A (the baseline)")
    parser.add_argument("b", help="checkout B (the change)")
    parser.add_argument("actions", nargs="*", default=["balance", "status", "add"],
                        help=f"any of {', '.join(run.ACTIONS)} (default: balance status add)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--slice", dest="slice_s", type=int, default=1, help="seconds per slice")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    for side in "ab":
        parser.add_argument(f"--env-{side}", action="append", default=[], metavar="NAME=VALUE",
                            help=f"an environment variable for {side.upper()}'s server only "
                                 "(the same checkout twice: a setting A/B)")
    args = parser.parse_intermixed_args()
    if set(args.actions) - set(run.ACTIONS):
        parser.error(f"unknown action(s): {', '.join(sorted(set(args.actions) - set(run.ACTIONS)))}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    data = dataset_of(os.path.abspath(args.a))
    shutil.rmtree(run.WORK, ignore_errors=True)
    os.makedirs(run.WORK)
    servers = {}
    for side, tree in (("a", args.a), ("b", args.b)):
        tree = os.path.abspath(tree)
        found = subprocess.run([os.path.join(run.BIN, "python"), "-c",
                                "import serva; print(serva.__file__)"], cwd=tree, check=True,
                               env={**os.environ, "PYTHONPATH": tree}, capture_output=True,
                               text=True).stdout.strip()
        if not found.startswith(os.path.join(tree, "")):
            raise SystemExit(f"{side}: `import serva` finds {found}, not {tree}'s")
        db_path = os.path.join(run.WORK, f"{side}.sqlite")
        shutil.copyfile(data["db"], db_path)
        if side == "b":
            subprocess.run([os.path.join(run.BIN, "serva"), "init-db"], cwd=tree, check=True,
                           env={**os.environ, "PYTHONPATH": tree,
                                "SERVA_DATABASE_URL": f"sqlite:///{db_path}"})
        servers[side] = run.Server(
            side, [os.path.join(run.BIN, "serva"), "serve", "--port", "{port}",
                   "--threads", str(args.threads), "--workers", "1"],
            {"PYTHONPATH": tree, "SERVA_DATABASE_URL": f"sqlite:///{db_path}",
             "SERVA_SECRET_KEY": "bench", **run.BENCH_LIMITS,
             **dict(pair.split("=", 1) for pair in getattr(args, f"env_{side}"))}, tree, db_path)
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready(f"action=balance&key={open(data['keys']).read().split()[0]}".encode())
        for action in args.actions:
            ratios, cpu_ratios, rates = [], [], {"a": [], "b": []}
            switches = {"a": [], "b": []}
            for round_no in range(args.rounds):
                order = ("a", "b") if round_no % 2 == 0 else ("b", "a")
                got = {side: slice_of(servers[side], action, args, data,
                                      f"ab-{action}-{side}{round_no}") for side in order}
                if got["a"]["bad"] or got["b"]["bad"]:
                    raise SystemExit(f"{action}: bad responses: {got['a']['first_bad']} "
                                     f"{got['b']['first_bad']}")
                ratios.append(got["b"]["rps"] / got["a"]["rps"])
                cpu_ratios.append(got["b"]["cpu_us"] / got["a"]["cpu_us"])
                for side in "ab":
                    rates[side].append(got[side]["rps"])
                    switches[side].append(got[side]["switches"])
            print(f"{action:10s} B/A {statistics.median(ratios):.3f}  rounds "
                  f"{' '.join(f'{r:.3f}' for r in ratios)}  (A {statistics.median(rates['a']):.0f}, "
                  f"B {statistics.median(rates['b']):.0f} req/s); CPU per request B/A "
                  f"{statistics.median(cpu_ratios):.3f}  rounds "
                  f"{' '.join(f'{r:.3f}' for r in cpu_ratios)}; context switches per request "
                  f"A {statistics.median(switches['a']):.1f}, B {statistics.median(switches['b']):.1f}",
                  flush=True)
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
