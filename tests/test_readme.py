"""The README is what a new user follows: its curl sequence runs, top to bottom, without one
error against a real server on a fresh demo database (as `make run` prepares it), and its
configuration table names exactly the SERVA_* settings the code reads."""
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_ADDRESS = "127.0.0.1:8000"  # where `make run` serves, as the README's lines say
SERVA_LINE = ".venv/bin/serva "
# The public page's snippets read these from the partner's environment: client variables, not
# settings of the server.
CLIENT_VARIABLES = {"SERVA_URL", "SERVA_KEY", "SERVA_HEADER", "SERVA_API_KEY"}
TIMEOUT = 60  # seconds, for any one command


def readme_section(heading: str) -> str:
    start = README.index(f"\n{heading}\n")
    following = re.search(r"\n#{1,3} ", README[start + len(heading) + 2:])
    return README[start:start + len(heading) + 2 + following.start()] if following else README[start:]


def curl_sequence() -> list[str]:
    """The commands of the first code block under "Trying the API", continuation lines joined."""
    lines, block = readme_section("### Trying the API").splitlines(), []
    for line in lines:
        if line.startswith("    "):
            block.append(line[4:])
        elif block and line.strip():
            break
    commands, pending = [], ""
    for line in block:
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
        else:
            commands.append(pending)
            pending = ""
    return commands


def errors_in(answer) -> list:
    """Every "error" anywhere in an answer (a batch answers each entry on its own)."""
    if isinstance(answer, dict):
        found = [answer["error"]] if "error" in answer else []
        return found + [e for value in answer.values() for e in errors_in(value)]
    if isinstance(answer, list):
        return [e for value in answer for e in errors_in(value)]
    return []


def serva_command() -> list[str]:
    """The `serva` console script beside this Python (what `.venv/bin/serva` is)."""
    script = Path(sys.executable).with_name("serva")
    return [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "from serva.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(tmp_path) -> dict:
    """A fresh deployment's environment: no SERVA_* of the caller, no proxy, a new database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SERVA_") and "proxy" not in k.lower()}
    env.update(SERVA_DATABASE_URL=f"sqlite:///{tmp_path / 'serva.sqlite'}",
               SERVA_SECRET_KEY="readme-test-secret")
    return env


def run(argv, env, **options):
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, **options)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def wait_until_serving(server, url, log_path, deadline_seconds=30):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer within {deadline_seconds} s: {log_path.read_text()}")




def curl(line: str, env: dict) -> tuple[int, str]:
    """The line as written, under bash, with the HTTP status appended to what it prints."""
    done = subprocess.run(["bash", "-c", line + " -w '\\n%{http_code}'"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def without_curl(line: str, key: str) -> tuple[int, str]:
    """The same request through urllib: the line's URL, its -d fields (POST) and -H headers."""
    tokens = shlex.split(line.replace("$KEY", key))
    assert tokens[0] == "curl", line
    url, fields, headers, rest = None, [], {}, iter(tokens[1:])
    for token in rest:
        if token == "-s":
            continue
        if token == "-d":
            fields.append(tuple(next(rest).split("=", 1)))
        elif token == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif token.startswith("http"):
            url = token
        else:
            pytest.fail(f"the test does not know curl's {token} (README line: {line})")
    body = urllib.parse.urlencode(fields).encode() if fields else None
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# ---------------------------------------------------------------- the curl sequence

def test_the_sequence_is_the_partners_tour():
    commands = curl_sequence()
    assert commands and all(c.startswith(("curl ", SERVA_LINE)) for c in commands), commands
    actions = [re.search(r"action=(\w+)", c).group(1) for c in commands if c.startswith("curl ")]
    assert {"balance", "services", "add", "status", "cancel", "refill", "refill_status"} <= set(actions)
    assert all(README_ADDRESS in c for c in commands if c.startswith("curl "))


def test_the_curl_sequence_runs_top_to_bottom_on_a_fresh_demo(tmp_path):
    env = clean_environment(tmp_path)
    serva = serva_command()
    run(serva + ["init-db"], env)
    key = run(serva + ["demo"], env).splitlines()[-1].strip()
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:  # waitress, as `make run` serves
        server = subprocess.Popen([sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}",
                                   "wsgi:app"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}/api", log_path)
        with_curl = shutil.which("curl") and shutil.which("bash")
        answers = []
        for command in curl_sequence():
            if command.startswith(SERVA_LINE):
                run(serva + shlex.split(command[len(SERVA_LINE):]), env)
                continue
            line = command.replace(README_ADDRESS, f"127.0.0.1:{port}")
            status, body = curl(line, {**env, "KEY": key}) if with_curl else without_curl(line, key)
            answer = json.loads(body)
            assert status == 200 and not errors_in(answer), (command, status, answer)
            answers.append(answer)
        # The ids the README writes are the ones the sequence gets.
        refill, refill_status = answers[-2:]
        assert refill == {"refill": "REF-5001"}
        assert refill_status[0]["refill"] == "REF-5001"
    finally:
        stop_process_group(server, wait=10)


# ---------------------------------------------------------------- the configuration table

def test_the_configuration_table_names_every_setting_the_code_reads():
    table = readme_section("### Configuration")
    documented = set(re.findall(r"`(SERVA_[A-Z0-9_]+)`",
                                "\n".join(line for line in table.splitlines()
                                          if line.startswith("| `SERVA_"))))
    read = set()
    for path in (ROOT / "serva").rglob("*.py"):
        read |= set(re.findall(r"""["'](SERVA_[A-Z0-9_]+)["']""", path.read_text(encoding="utf-8")))
    read -= CLIENT_VARIABLES
    assert read, "no SERVA_* name found under serva/: where are the settings read now?"
    assert read - documented == set(), "settings missing from the README's table"
    assert documented - read == set(), "the README's table names settings the code does not read"
