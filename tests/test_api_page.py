"""The public API page, GET /api: generated from the dispatch table, the parameters, the error
table and the catalog, and every request and snippet on it run as shown against a live server
with the demo data (`serva demo`) — curl lines under bash, the JavaScript snippet under Node,
the PHP one under php-cli, the Python one under this Python, the JSON body with requests."""
import ast
import html
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import requests

from serva import api, errors, spec
from serva.page import EXAMPLE_KEY, KEY_ENV
from serva.spec import Action, Example, Param
from serva.cli import cli as serva_cli

from test_snippets import _php_has_curl

EXAMPLE_RE = re.compile(r'<div class="example" id="(example-[\w-]+)" data-action="([\w-]+)" '
                        r'data-number="(\d+)">.*?<code class="request"[^>]*>(.*?)</code>.*?'
                        r'<code class="response"[^>]*>(.*?)</code>', re.S)
SNIPPET_RE = re.compile(r'<code id="snippet-(\w+)" data-language="(\w+)" '
                        r'data-example="(example-[\w-]+)">(.*?)</code>', re.S)
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


# ---------------------------------------------------------------- helpers

def examples(page: str) -> list:
    """(id, action, number, request, response) of every example, in page order."""
    return [(ident, action, int(number), html.unescape(request), json.loads(html.unescape(response)))
            for ident, action, number, request, response in EXAMPLE_RE.findall(page)]


def snippets(page: str) -> dict:
    """language -> (the example it sends, its code)."""
    return {language: (example, html.unescape(code))
            for _, language, example, code in SNIPPET_RE.findall(page)}


def shown_responses(page: str) -> dict:
    return {ident: response for ident, _, _, _, response in examples(page)}


def matches(actual, shown) -> bool:
    """As shown: equal values and types, except that a list may show only its first entries
    (the others must have the same keys)."""
    if isinstance(shown, dict):
        return (isinstance(actual, dict) and actual.keys() == shown.keys()
                and all(matches(actual[k], v) for k, v in shown.items()))
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) < len(shown):
            return False
        if not shown:
            return actual == []
        return (all(matches(a, s) for a, s in zip(actual, shown))
                and all(same_shape(a, shown[0]) for a in actual[len(shown):]))
    return type(actual) is type(shown) and actual == shown


def same_shape(actual, shown) -> bool:
    """The same keys and JSON types all the way down (values may differ; null is any scalar)."""
    if isinstance(shown, dict):
        return (isinstance(actual, dict) and actual.keys() == shown.keys()
                and all(same_shape(actual[k], v) for k, v in shown.items()))
    if isinstance(shown, list):
        return isinstance(actual, list) and (not shown or all(same_shape(a, shown[0]) for a in actual))
    if actual is None or shown is None:
        return not isinstance(actual, (dict, list)) and not isinstance(shown, (dict, list))
    return type(actual) is type(shown)


def run(command, **options):
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=CLEAN_ENV,
                            **options)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def need(program):
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


@pytest.fixture
def demo(app, runner):
    """The demo data, as `make run` prepares it; the printed key."""
    result = runner.invoke(serva_cli, args=["demo"])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[-1]


@pytest.fixture
def page(live_server, demo):
    response = requests.get(f"{live_server}/api", timeout=30)
    assert response.status_code == 200
    return response.text


# ---------------------------------------------------------------- generated from the sources

def test_the_page_is_html_for_people(client):
    response = client.get("/api")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert client.get("/api/").status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<script>" not in response.text  # no inline script: the CSP would block it
    assert client.post("/api").status_code == 405


def test_every_action_parameter_and_alias_is_on_the_page(client):
    page = html.unescape(client.get("/api").text)
    for name, action in api.ACTIONS.items():
        assert f'id="action-{name}"' in page
        for number, _ in enumerate(action.examples, 1):
            assert f'id="example-{name}-{number}"' in page
        for param in action.params:
            assert f'id="param-{param.name}"' in page
            assert " / ".join(param.names) in page
    for param in (spec.KEY, spec.ACTION):
        assert f'id="param-{param.name}"' in page
    assert "/api/v1" in page and "/api/v2" in page


def test_the_error_table_is_on_the_page(client):
    page = html.unescape(client.get("/api").text)
    public = {errors.PUBLIC_CODE.get(code, code) for code in errors.MESSAGES}
    assert public == set(errors.WHEN), "every public error code needs its WHEN sentence"
    for code in public:
        assert f'id="error-{code}"' in page
    for message in errors.MESSAGES.values():
        assert re.sub(r"\{(\w+)\}", r"<\1>", message) in page


def test_every_html_id_of_the_page_is_unique(client, demo):
    """Anchors and snippets are found by id (links, copy buttons, the page's own test)."""
    page = client.get("/api").text
    ids = re.findall(r'\sid="([^"]*)"', page)
    assert ids and len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for anchor in re.findall(r'href="#([^"]*)"', page):
        assert anchor in ids, anchor


CONTRACT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "CONTRACT.md")


def test_the_contract_document_names_what_the_code_does():
    """docs/CONTRACT.md is written by hand from the same sources as this page: every action,
    every parameter and alias, every public code with each of its messages, every status."""
    with open(CONTRACT, encoding="utf-8") as handle:
        contract = handle.read()
    for name, action in api.ACTIONS.items():
        assert f"### `{name}`" in contract, name
        for param in action.params:
            assert " / ".join(f"`{alias}`" for alias in param.names) in contract, param.names
    for param in (spec.KEY, spec.ACTION):
        assert f"`{param.name}`" in contract
    for code, message in errors.MESSAGES.items():
        public = errors.PUBLIC_CODE.get(code, code)
        row = re.search(rf"^\| `{public}`( \(HTTP (\d+)\))? \|(.*)$", contract, re.M)
        assert row, public
        assert "`" + re.sub(r"\{(\w+)\}", r"<\1>", message) + "`" in row.group(3), (code, message)
        assert row.group(2) == (str(errors.HTTP_STATUS[public]) if public in errors.HTTP_STATUS
                                else None), public
    for status in ("Pending", "In progress", "Processing", "Completed", "Partial", "Canceled",
                   "Rejected"):
        assert f"`{status}`" in contract, status


def test_the_contract_document_stands_alone():
    """It names no path outside the repository."""
    with open(CONTRACT, encoding="utf-8") as handle:
        contract = handle.read()
    assert not re.search(r"\.\./|/work/|/home/|/tmp/|shared/", contract)


def test_an_action_added_to_the_dispatch_table_appears_with_its_example(client, monkeypatch):
    nonce = Param(("nonce", "n"), "No", "Echoed back as `pong`.")
    monkeypatch.setitem(api.ACTIONS, "ping", Action(
        lambda account, params: {"pong": nonce.get(params)}, "Answers `pong`.", params=(nonce,),
        examples=(Example({"nonce": "abc"}, {"pong": "abc"}, note="Ping."),)))
    page = client.get("/api").text
    found = {ident: (request, response) for ident, _, _, request, response in examples(page)}
    request, response = found["example-ping-1"]
    assert "-d action=ping" in request and "-d nonce=abc" in request
    assert response == {"pong": "abc"}
    assert "<code>nonce</code> / <code>n</code>" in page and "Answers <code>pong</code>." in page
    assert '<a href="#action-ping"><code>ping</code></a>' in page


def test_the_catalog_shown_is_the_live_one_without_a_caller(app, client, runner, demo):
    page = client.get("/api").text
    catalog = page[page.index('id="catalog"'):page.index('id="snippets"')]
    for service_id in ("1234", "1235", "1236", "7788"):
        assert f"<td>{service_id}</td>" in catalog
    runner.invoke(serva_cli, args=["service", "disable", "1235"])
    assert "<td>1235</td>" not in client.get("/api").text


def test_linked_from_the_sign_in_page_and_the_dashboard(app, client):
    from test_dashboard import make_account, sign_in
    assert 'href="/api" id="api-reference"' in client.get("/profile/login").text
    make_account(app)
    sign_in(client)
    assert 'href="/api" id="api-reference"' in client.get("/profile/api/").text


# ---------------------------------------------------------------- run as shown

def test_every_example_runs_as_shown_in_page_order(app, runner, page, demo):
    need("curl")
    found = examples(page)
    assert {action for _, action, _, _, _ in found} == set(api.ACTIONS)
    assert len(found) == sum(len(action.examples) for action in api.ACTIONS.values())
    for ident, action, number, request, shown in found:
        for command in api.ACTIONS[action].examples[number - 1].setup:
            result = runner.invoke(serva_cli, args=list(command))
            assert result.exit_code == 0, (ident, command, result.output)
        assert request.count(EXAMPLE_KEY) == 1
        actual = json.loads(run(["bash", "-c", request.replace(EXAMPLE_KEY, demo)]))
        assert matches(actual, shown), (ident, actual, shown)


def test_the_curl_snippet(page, demo):
    need("curl")
    example, code = snippets(page)["curl"]
    actual = json.loads(run(["bash", "-c", code.replace(EXAMPLE_KEY, demo)]))
    assert matches(actual, shown_responses(page)[example]), actual


def test_the_python_snippet(page, demo):
    example, code = snippets(page)["python"]
    printed = run([sys.executable, "-c", code.replace(EXAMPLE_KEY, demo)])
    actual = ast.literal_eval(printed.strip())  # what print() shows of the decoded JSON
    assert matches(actual, shown_responses(page)[example]), actual


def test_the_javascript_snippet(tmp_path, page, demo):
    node = need("node")
    major = int(run([node, "--version"]).strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.skip("node before 18 has no fetch")
    example, code = snippets(page)["javascript"]
    assert f"process.env.{KEY_ENV}" in code
    script = tmp_path / "snippet.mjs"
    script.write_text(code + '\nprocess.stdout.write("@@" + JSON.stringify(data));\n')
    result = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                            env={**CLEAN_ENV, KEY_ENV: demo})
    assert result.returncode == 0, result.stderr
    actual = json.loads(result.stdout.rpartition("@@")[2])
    assert matches(actual, shown_responses(page)[example]), actual


def test_the_php_snippet_runs_as_a_file(tmp_path, page, demo):
    php = need("php")
    if not _php_has_curl(php):  # php-cli alone (Debian's php-curl is a package of its own)
        pytest.skip("php-cli has no curl extension")
    example, code = snippets(page)["php"]
    assert code.startswith("<?php\n")
    script = tmp_path / "snippet.php"
    script.write_text(code.replace(EXAMPLE_KEY, demo))
    actual = json.loads(run([php, str(script)]))  # echo $result
    assert matches(actual, shown_responses(page)[example]), actual


def test_the_json_body(live_server, page, demo):
    example, body = snippets(page)["json"]
    payload = json.loads(body.replace(EXAMPLE_KEY, demo))
    assert payload["action"] == example.split("-")[1]
    response = requests.post(f"{live_server}/api/v1", json=payload, timeout=30)
    actual = response.json()
    assert "error" not in actual, actual
    assert same_shape(actual, shown_responses(page)[example]), actual


def test_the_matchers_can_fail():
    assert not matches({"a": 1}, {"a": "1"}) and not matches([{"a": 1}], [{"a": 1}, {"a": 2}])
    assert not matches([{"a": 1}, {"b": 2}], [{"a": 1}]) and matches([{"a": 1}, {"a": 2}], [{"a": 1}])
    assert not matches([1], []) and not same_shape({"a": 1, "b": 2}, {"a": 1})
    assert same_shape({"a": None}, {"a": 3}) and not same_shape({"a": "x"}, {"a": 3})
