"""The public API page, `GET /api`: for people, generated from the code's own sources so it
cannot drift — the dispatch table (`api.ACTIONS`: actions, their parameters with aliases,
their examples), the parameters (`spec`), the error table (`errors`) and the caller-independent
parts of the catalog. Every request and snippet on the page is runnable as shown; the page's
test runs each one against a live server with the demo data."""
import json
import re
import shlex

from flask import Blueprint, current_app, render_template, url_for
from markupsafe import Markup, escape

from . import api, catalog, dashboard, errors, spec
from .webhooks import docs as webhook_docs

bp = Blueprint("page", __name__)

EXAMPLE_KEY = "YOUR_API_KEY"
KEY_ENV = "SERVA_API_KEY"  # the JavaScript snippet reads the key from the environment
# Which example each snippet sends (action, example index), and how.
SNIPPETS = (
    ("curl", "services", 0),
    ("javascript", "services", 0),
    ("php", "add", 0),
    ("python", "balance", 0),
)
JSON_EXAMPLE = ("add", 1)  # the body of a JSON request
_NEEDS_ENCODING = re.compile(r"[&+%#\s]|[^\x00-\x7f]")
_JS_NAME = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


# ---------------------------------------------------------------- requests as code

def form_pairs(params, prefix=None):
    """Parameters as form fields, objects as PHP-style nested keys (fields[player_id]=1):
    what the endpoint reads back into the same object."""
    pairs = []
    for name, value in params.items():
        key = name if prefix is None else f"{prefix}[{name}]"
        if isinstance(value, dict):
            pairs.extend(form_pairs(value, key))
        else:
            pairs.append((key, str(value)))
    return pairs


def request_params(action: str, params: dict, key=EXAMPLE_KEY) -> dict:
    return {spec.ACTION.name: action, spec.KEY.name: key, **params}


def curl_command(endpoint: str, action: str, params: dict, header_key=False) -> str:
    """A shell line that sends the request (form-encoded, as the ecosystem's clients do)."""
    head = [f"curl -s {shlex.quote(endpoint)}"]
    if header_key:
        head.append("-H " + shlex.quote(f"x-api-key: {EXAMPLE_KEY}"))
        pairs = form_pairs({spec.ACTION.name: action, **params})
    else:
        pairs = form_pairs(request_params(action, params))
    options = [("--data-urlencode " if _NEEDS_ENCODING.search(value) else "-d ")
               + shlex.quote(f"{name}={value}") for name, value in pairs]
    first, rest = options[:2], options[2:]
    command = " ".join(head + first)
    return command + (" \\\n     " + " ".join(rest) if rest else "")


def _php(value, indent="") -> str:
    if isinstance(value, dict):
        inner = indent + "    "
        items = "".join(f"{inner}{_php(k)} => {_php(v, inner)},\n" for k, v in value.items())
        return f"[\n{items}{indent}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def php_snippet(endpoint: str, action: str, params: dict) -> str:
    """The public page's PHP snippet, as a file PHP runs (`<?php`): http_build_query + curl."""
    return (f"<?php\n$payload = http_build_query({_php(request_params(action, params))});\n"
            f"$ch = curl_init({_php(endpoint)});\n"
            "curl_setopt_array($ch, [\n"
            "    CURLOPT_POST => true,\n"
            "    CURLOPT_POSTFIELDS => $payload,\n"
            "    CURLOPT_RETURNTRANSFER => true,\n"
            "]);\n"
            "$result = curl_exec($ch);\n"
            "curl_close($ch);\n"
            "echo $result;\n")


def javascript_snippet(endpoint: str, action: str, params: dict) -> str:
    """The public page's JavaScript snippet (fetch + URLSearchParams; Node 18+ or a browser)."""
    fields = [(spec.ACTION.name, json.dumps(action)),
              (spec.KEY.name, f"process.env.{KEY_ENV}")]
    fields += [(name, json.dumps(value)) for name, value in form_pairs(params)]
    body = ",\n".join(f"  {name if _JS_NAME.match(name) else json.dumps(name)}: {value}"
                      for name, value in fields)
    return (f"const params = new URLSearchParams({{\n{body}\n}});\n"
            f"const response = await fetch({json.dumps(endpoint)}, {{\n"
            '  method: "POST",\n'
            "  headers: {\n"
            '    "Content-Type": "application/x-www-form-urlencoded"\n'
            "  },\n"
            "  body: params\n"
            "});\n"
            "const data = await response.json();\n"
            "console.log(data);\n")


def python_snippet(endpoint: str, action: str, params: dict) -> str:
    """A Python snippet with requests (form-encoded POST)."""
    fields = "".join(f"    {json.dumps(name)}: {json.dumps(value)},\n"
                     for name, value in form_pairs(request_params(action, params)))
    return ("import requests\n\n"
            f"response = requests.post({json.dumps(endpoint)}, data={{\n{fields}}}, timeout=30)\n"
            "print(response.json())\n")


def json_body(action: str, params: dict) -> str:
    return json.dumps(request_params(action, params), indent=2)


# ---------------------------------------------------------------- the page

def _shown(value) -> str:
    return json.dumps(value, indent=2)


def _examples(name, action, endpoint, context) -> list:
    shown = []
    for number, example in enumerate(action.examples, 1):
        response = example.response(context) if callable(example.response) else example.response
        shown.append({"id": f"example-{name}-{number}", "action": name, "number": number,
                      "note": example.note, "request": curl_command(endpoint, name, example.params),
                      "response": _shown(response)})
    return shown


def _parameters():
    """Every parameter once, with the actions that read it (KEY and ACTION: all of them)."""
    rows = {spec.KEY.names: (spec.KEY, ["all"]), spec.ACTION.names: (spec.ACTION, ["all"])}
    for name, action in api.ACTIONS.items():
        for param in action.params:
            rows.setdefault(param.names, (param, []))[1].append(name)
    return [{"param": param, "used_by": used_by} for param, used_by in rows.values()]


def _errors():
    """The error table by public code: its message(s), placeholders shown as <name>."""
    messages = {}
    for code, message in errors.MESSAGES.items():
        public = errors.PUBLIC_CODE.get(code, code)
        messages.setdefault(public, []).append(re.sub(r"\{(\w+)\}", r"<\1>", message))
    return [{"code": code, "messages": shown, "when": errors.WHEN.get(code, "")}
            for code, shown in messages.items()]


def _snippets(endpoint):
    makers = {"curl": lambda e, a, p: curl_command(e, a, p, header_key=True),
              "javascript": javascript_snippet, "php": php_snippet, "python": python_snippet}
    titles = {"curl": "curl", "javascript": "JavaScript", "php": "PHP", "python": "Python"}
    shown = []
    for language, name, index in SNIPPETS:
        example = api.ACTIONS[name].examples[index]
        shown.append({"language": language, "title": titles[language], "action": name,
                      "example": f"example-{name}-{index + 1}",
                      "code": makers[language](endpoint, name, example.params)})
    return shown


@bp.route("/api", methods=["GET"], strict_slashes=False)
def api_page():
    endpoint = url_for("api.endpoint", _external=True)
    context = {"currency": current_app.config["CURRENCY"], "services": catalog.public_entries()}
    actions = [{"name": name, "summary": action.summary, "params": action.params,
                "lead": action.summary.split(". ")[0].rstrip(".").lower(),
                "extra": action.extra, "examples": _examples(name, action, endpoint, context)}
               for name, action in api.ACTIONS.items()]
    json_name, json_index = JSON_EXAMPLE
    return render_template(
        "public_api.html", endpoint=endpoint, versions=api.API_ENDPOINTS, actions=actions,
        parameters=_parameters(), errors=_errors(), services=context["services"],
        snippets=_snippets(endpoint), currency=context["currency"],
        json_example={"action": json_name, "example": f"example-{json_name}-{json_index + 1}",
                      "body": json_body(json_name, api.ACTIONS[json_name].examples[json_index].params)},
        key_env=KEY_ENV, webhooks=webhook_docs.section())


# The same headers as the dashboard: a strict CSP (no inline script), no framing, no caching.
bp.after_request(dashboard.private_pages)


@bp.app_template_filter("ticks")
def ticks(text: str) -> Markup:
    """Plain text whose `quoted` words become <code> (descriptions in spec and api.ACTIONS)."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def init_app(app):
    app.register_blueprint(bp)
