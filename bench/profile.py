"""`make bench-profile`: where the server's time goes, per action, under the benchmark's load.

Starts Serva like `make bench` does (`serva serve --workers 1`, on a copy of the 1M-order
dataset), drives one action at a time with wrk at 32 connections and records the worker
with py-spy (`pip install py-spy`; it needs ptrace, so root or CAP_SYS_PTRACE):

  bench/results/profile-<action>.svg      flame graph of the thread holding the GIL (--gil):
                                          the Python CPU time, what limits one process
  bench/results/profile-<action>.txt      the same samples summarized: share of samples per
                                          function, inclusive and self
  bench/results/profile-add-wall.txt      for `add` also every thread's wall-clock time
                                          (--idle): where requests wait (group commit, fsync)

It also measures, on the same server, what a request costs in context switches and CPU,
next to the bare endpoint (bench/results/profile-summary.txt).
"""
import collections
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402
import run  # noqa: E402

ACTIONS = os.environ.get("PROFILE_ACTIONS", "balance,status,status100,services,add").split(",")
SECONDS = int(os.environ.get("PROFILE_SECONDS", 6))
WORK = os.path.join(HERE, "data", "profile")  # raw samples (git-ignored), apart from run.WORK


def py_spy():
    path = shutil.which("py-spy") or os.path.join(run.BIN, "py-spy")
    if not os.path.exists(path):
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return path


def _frame(text):
    """'handler (/path/to/module.py:123)' -> 'handler (module.py)'"""
    name, _, where = text.partition(" (")
    if not where:
        return text
    return f"{name} ({os.path.basename(where.rstrip(')').rsplit(':', 1)[0])})"


def _wall_state(frames):
    """What a thread of a gunicorn gthread worker is doing, for the wall-clock profile of `add`."""
    names = [f.split(" (")[0] for f in frames]
    leaf = names[-1]
    if "write_lock" in names or "_acquire" in leaf:
        return "waiting for this process's write lock (db.write)"
    if leaf == "Handler.acquire":
        return "waiting for the log handler's lock (another thread writes its access line)"
    if "ThreadWorker.handle" in names:
        return "request thread, other work (parsing, key lookup, response, log write)"
    if "_worker" in names:
        return "request thread idle, waiting for a request"
    return "the worker's main thread (gunicorn's event loop, heartbeat)"


def _serva_line(text):
    """'handler (serva/api.py:123)' -> 'serva/api.py:123 handler'; None outside Serva's code."""
    name, _, where = text.partition(" (")
    path = where.rstrip(")")  # py-spy shows a package's files from the package: serva/api.py:12
    if "/site-packages/" in path or not (path.startswith("serva/") or "/serva/" in path):
        return None
    return f"serva/{path.split('serva/', 1)[1]} {name}"


def summarize(raw_path, out_path, title, classify=None):
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    states, lines = collections.Counter(), collections.Counter()
    with open(raw_path) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():  # --nonblocking can tear a frame's name
                continue
            count = int(count)
            total += count
            raw_frames = stack.split(";")
            for line_of_serva in {_serva_line(f) for f in raw_frames} - {None}:
                lines[line_of_serva] += count
            frames = [_frame(f) for f in raw_frames]
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
            if classify is not None:
                states[classify(frames)] += count
    with open(out_path, "w") as out:
        out.write(f"{title}\n{total} samples\n\n")
        if classify is not None:
            out.write("-- threads by state\n")
            for state, count in states.most_common():
                out.write(f"{100 * count / total:5.1f}%  {state}\n")
            out.write("\n")
        out.write("-- inclusive (share of samples with the function on the stack)\n")
        for frame, count in inclusive.most_common(60):
            out.write(f"{100 * count / total:5.1f}%  {frame}\n")
        out.write("\n-- self (share of samples in the function itself)\n")
        for frame, count in own.most_common(30):
            out.write(f"{100 * count / total:5.1f}%  {frame}\n")
        out.write("\n-- Serva's own code, line by line (share of samples with the line on the stack;\n"
                  "   a line that calls a function includes that function's time)\n")
        for where, count in sorted(lines.items(), key=lambda item: (-item[1], item[0]))[:50]:
            out.write(f"{100 * count / total:5.1f}%  {where}\n")


def switches(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as handle:
            for line in handle:
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
    return total


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    spy = py_spy()
    big = gen.build(orders=1_000_000)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    os.makedirs(run.RESULTS, exist_ok=True)
    run.WORK = WORK  # the servers' logs and wrk's outputs go here too
    db_path = os.path.join(WORK, "profile.sqlite")
    shutil.copyfile(big["db"], db_path)
    threads = str(int(os.environ.get("BENCH_THREADS", 8)))
    env = {"SERVA_DATABASE_URL": f"sqlite:///{db_path}", "SERVA_SECRET_KEY": "bench"}
    servers = {
        "app": run.Server("app", [os.path.join(run.BIN, "serva"), "serve", "--port", "{port}",
                                  "--threads", threads, "--workers", "1"], env, run.ROOT),
        "bare": run.Server("bare", [os.path.join(run.BIN, "python"), "-m", "serva.serve", "--port",
                                    "{port}", "--threads", threads, "--workers", "1", "bare:app"],
                           {}, HERE),
    }
    probe = f"action=balance&key={open(big['keys']).readline().strip()}".encode()
    summary = [f"per request, one gunicorn gthread worker process, {threads} threads, "
               f"wrk pinned to another core, 32 connections, {SECONDS} s each", ""]
    try:
        for server in servers.values():
            server.start()
            server.wait_ready(probe)
        worker = {name: [p for p in s.pids() if p != s.proc.pid][0] for name, s in servers.items()}
        for name, action in [("bare", "bare")] + [("app", a) for a in ACTIONS]:
            pid, server = worker[name], servers[name]
            run.wrk(server, action, 1, 32, big, f"profile-warm-{action}")
            # 1. the cost per request, without a profiler attached
            before = switches(pid), cpu_ticks(pid)
            result = run.wrk(server, action, SECONDS, 32, big, f"profile-{action}")
            after = switches(pid), cpu_ticks(pid)
            n = result["requests"]
            summary.append(f"{action:10s} {result['rps']:8.0f} req/s   CPU {10_000 * (after[1] - before[1]) / n:6.0f} µs"
                           f" per request   voluntary context switches {(after[0] - before[0]) / n:5.1f}"
                           " per request")
            if name != "app":
                continue
            # 2. the profile, under the same load (py-spy stops the process for each sample, so the
            # stacks are exact; the numbers above are taken without it)
            recordings = [("--gil", "raw", f"profile-{action}.raw", SECONDS),
                          ("--gil", "flamegraph", f"profile-{action}.svg", 2)]
            if action == "add":
                recordings.append(("--idle", "raw", "profile-add-wall.raw", 2))
            driver = threading.Thread(target=run.wrk, args=(
                server, action, 1 + sum(r[3] for r in recordings) + 3, 32, big, f"profile-load-{action}"))
            driver.start()
            time.sleep(1)
            for mode, form, name_out, seconds in recordings:
                out = os.path.join(WORK if form == "raw" else run.RESULTS, name_out)
                subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(seconds),
                                "--rate", "200", mode, "--format", form,
                                "--output", out], check=True, capture_output=True)
            driver.join()
            summarize(os.path.join(WORK, f"profile-{action}.raw"),
                      os.path.join(run.RESULTS, f"profile-{action}.txt"),
                      f"py-spy --gil, {action}: where the Serva worker's Python CPU time goes")
            if action == "add":
                summarize(os.path.join(WORK, "profile-add-wall.raw"),
                          os.path.join(run.RESULTS, "profile-add-wall.txt"),
                          "py-spy --idle, add: every thread's wall-clock time, waiting included",
                          classify=_wall_state)
    finally:
        for server in servers.values():
            server.stop()
        for suffix in ("", "-wal", "-shm"):  # the database copy goes; logs and samples stay
            if os.path.exists(db_path + suffix):
                os.remove(db_path + suffix)
    with open(os.path.join(run.RESULTS, "profile-summary.txt"), "w") as handle:
        handle.write("\n".join(summary) + "\n")
    print("\n".join(summary))
    print(f"profiles in {os.path.relpath(run.RESULTS, run.ROOT)}/profile-*.svg|txt")


if __name__ == "__main__":
    main()
