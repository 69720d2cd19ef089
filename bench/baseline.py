"""Measure an earlier commit the way `make bench` measures the working tree (the "before"
column of bench/README.md): `python bench/baseline.py [COMMIT] [--threads 4] [--pin]`.

The commit's files are exported with `git archive` into a temporary directory (the
repository is only read), served with that era's documented command (`waitress-serve
--listen=… wsgi:app`) on a copy of the 1M-order dataset, next to the bare endpoint served the
same way, and compared action by action in alternating slices, like bench/run.py does.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402
import run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commit", nargs="?", default="bfdfa75")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pin", action="store_true", help="pin the servers to the first core")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    big = gen.build(orders=1_000_000)
    source = tempfile.mkdtemp(prefix="serva-baseline-")
    archive = subprocess.run(["git", "archive", args.commit], cwd=run.ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
    shutil.rmtree(run.WORK, ignore_errors=True)
    os.makedirs(run.WORK)
    db_path = os.path.join(run.WORK, "baseline.sqlite")
    shutil.copyfile(big["db"], db_path)
    prefix = ["taskset", "-c", "0"] if args.pin else []
    if not args.pin:
        run._wrk_core = lambda: None
    waitress = [*prefix, os.path.join(run.BIN, "waitress-serve"), "--listen=127.0.0.1:{port}",
                f"--threads={args.threads}"]
    servers = {
        "app": run.Server("app", [*waitress, "wsgi:app"],
                          {"SERVA_DATABASE_URL": f"sqlite:///{db_path}", "SERVA_SECRET_KEY": "bench",
                           "PYTHONPATH": source}, source),
        "bare": run.Server("bare", [*waitress, "bare:app"], {}, HERE),
    }
    comparisons = [run.Comparison(a, ("app", a, big), ("bare", "bare", big), "action")
                   for a in run.ACTIONS]
    probe = f"action=balance&key={open(big['keys']).readline().strip()}".encode()
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready(probe)
        for action in run.ACTIONS:
            run.wrk(servers["app"], action, 1, 32, big, f"warm-{action}")
        for round_no in range(1, args.rounds + 1):
            for comparison in comparisons:
                got = comparison.run_round(servers, 3, 1, 32, round_no)
                a, b = run.combine(got["a"]), run.combine(got["b"])
                print(f"round {round_no} {comparison.name:10s} {a['rps']:7.1f} / {b['rps']:7.1f} "
                      f"= {a['rps'] / b['rps']:.2f}  p99 {a['p99_ms']:.1f} ms  bad {a['bad']}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(source, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db_path + suffix):
                os.remove(db_path + suffix)
    results = {c.name: run.summarize(c) for c in comparisons}
    out = os.path.join(run.RESULTS, f"baseline-{args.commit}.json")
    with open(out, "w") as handle:
        json.dump({"commit": args.commit, "threads": args.threads, "pinned": args.pin,
                   "actions": results}, handle, indent=2)
    for name, summary in results.items():
        print(f"{name:10s} ratio {summary['ratio']:.2f}  {summary['a']['rps']:.0f} req/s  "
              f"p99 {summary['a']['p99_ms']:.0f} ms")
    print(f"written to {os.path.relpath(out, run.ROOT)}")


if __name__ == "__main__":
    main()
