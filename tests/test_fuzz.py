"""Property-based fuzz of the whole /api/v1 request surface (Hypothesis).

Parameter names and their aliases, PHP-style nested keys, unicode digits, lone surrogates, NUL,
huge and negative numbers, nested `fields`, the key in each of its four places (and several),
`Idempotency-Key`, every content type (form, multipart, JSON object/array/scalar/invalid,
text/plain, none), GET and POST, /api/v1 and /api/v2 with and without the trailing slash.
Whatever is sent: never a 5xx, always JSON with `x-serva-request-id`, an error is exactly {"error", "code"}
with a known code, a success never has an `error` key, and the money stays audited.

A good share of the requests carry a valid key and a nearly valid `add` or `status`, so the
deep paths (pricing, guard, coupon, idempotency, the order INSERT) are reached, not only the
key checks; the tests assert that they were.

The `ci` profile (default) keeps this to a few thousand requests on the Flask test client;
`make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more."""
import itertools
import json
import os
from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from serva import REQUEST_ID_HEADER, coupons, create_app, db, services
from serva.demo import CATALOG
from serva.errors import MESSAGES, PUBLIC_CODE
from serva.cli import cli as serva_cli

from conftest import make_partner

COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("ci", max_examples=750, **COMMON)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 20_000)), **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CODES = {PUBLIC_CODE.get(code, code) for code in MESSAGES}
SERVICES = [str(entry["id"]) for entry in CATALOG]
COUPON = "FUZZ10"
UNICODE_DIGITS = "²³¹١٢٣٠۱۲߁१०０１９𝟘𝟙"
PARAMS = ["action", "key", "service", "link", "target", "target_link", "quantity", "fields",
          "inputs", "custom_fields", "coupon", "coupon_code", "order", "orders",
          "idempotency_key", "comments", "runs", "interval", "player_id"]
ACTIONS = ["balance", "services", "add", "status", " ADD ", "Status", "refill", "cancel", ""]


# ---------------------------------------------------------------- the world the requests meet

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One app for every example (a fresh one per example would be most of the cost): the demo
    catalog, a coupon, and partners in each state a key can be in."""
    path = tmp_path_factory.mktemp("fuzz") / "serva.sqlite"
    app = create_app({"TESTING": True, "SECRET_KEY": "fuzz", "DATABASE_URL": f"sqlite:///{path}",
                      "SQLITE_SYNCHRONOUS": "OFF",  # and no rate limits: thousands of requests
                      "RATE_LIMIT_PER_KEY": "", "RATE_LIMIT_INVALID_KEYS": ""})
    db.init_schema(app.extensions["serva.engine"])
    with app.app_context(), db.write() as conn:
        for entry in CATALOG:
            services.add(conn, **entry)
        coupons.create(conn, COUPON, "percent", 1000)
    from serva import accounts, keys
    keys_by_state = {"valid": make_partner(app, "fuzz@example.com", balance="1000000")[1],
                     "unapproved": make_partner(app, "new@example.com", approved=False)[1],
                     "banned": make_partner(app, "banned@example.com")[1],
                     "revoked": make_partner(app, "revoked@example.com")[1]}
    with app.app_context(), db.write() as conn:
        accounts.set_banned(conn, accounts.get_by_email(conn, "banned@example.com").id, True)
        keys.revoke_key(conn, accounts.get_by_email(conn, "revoked@example.com").id)
    client = app.test_client()
    for n in range(3):  # orders for `status` to find (ORD-100001..3)
        assert "order" in client.post("/api/v1", data={
            "action": "add", "key": keys_by_state["valid"], "service": "1234",
            "link": f"https://example.com/seed/{n}", "quantity": "100"}).get_json()
    from serva import orders as orders_repo
    with app.app_context(), db.write() as conn:  # one completed, for refill to accept
        orders_repo.set_status(conn, 3, "Completed")
    yield app, keys_by_state
    app.extensions["serva.engine"].dispose()


# ---------------------------------------------------------------- values

surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\udbff\ud800"])
odd_text = st.text(st.characters(categories=["Cs", "Cc", "Nd", "No", "Zs", "L", "P", "S"]),
                   max_size=12)
unicode_numbers = st.text(st.sampled_from(UNICODE_DIGITS + "0123456789"), min_size=1, max_size=7)
numbers = st.one_of(st.integers(-10**30, 10**30),
                    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63, 10**18, -(10**19)]),
                    st.floats(allow_nan=True, allow_infinity=True))
numeric_text = st.one_of(st.from_regex(r"\A[-+ ]?[0-9]{1,25}\s?\Z"), unicode_numbers,
                         numbers.map(str), unicode_numbers.map(lambda n: "ORD-" + n))
order_ids = st.one_of(st.integers(100_001, 100_200).map(str),
                      st.integers(100_001, 100_200).map(lambda n: f"ORD-{n}"),
                      st.integers(100_001, 100_200).map(lambda n: f" ord-{n} "),
                      st.integers(100_001, 100_200), numeric_text)
# A fresh number per draw, so that valid orders do not all meet the purchase guard
# (Hypothesis favours small, repeated values; uniqueness is not what is under test).
_fresh = itertools.count()
fresh = st.builds(lambda: next(_fresh))
good_links = fresh.map(lambda n: f"https://example.com/p/{n}")
links = st.one_of(good_links,
                  st.sampled_from(["http://EXAMPLE.com:80/a/", "ftp://example.com/x", "https://",
                                   "example.com/p", "https://exa mple.com", "https://[::1]:99999/",
                                   "https://example.com/\x00", "javascript:alert(1)"]),
                  odd_text.map(lambda t: "https://example.com/" + t))
scalars = st.one_of(st.none(), st.booleans(), numbers, numeric_text, odd_text, surrogates,
                    st.sampled_from(["", " ", "\x00", *SERVICES, COUPON, "balance"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(odd_text, st.sampled_from(PARAMS)),
                                                 inner, max_size=4)), max_leaves=12)


def bracketed(name):
    subs = st.one_of(st.sampled_from(["", "0", "1", "²", "name", "value", "player_id"]), odd_text)
    return st.lists(subs, min_size=1, max_size=6).map(lambda parts: name + "".join(f"[{p}]" for p in parts))


names = st.one_of(st.sampled_from(PARAMS), odd_text, st.sampled_from(PARAMS).flatmap(bracketed),
                  st.sampled_from(["[]", "a[", "a]", "[x]", "key[]", "action[]"]))


def fields_for(service):
    """A `fields` value for the service, valid or nearly: every encoding the contract names."""
    good = {"7788": {"player_id": "123456", "server_id": "55"},
            "1236": {"comments": "nice\nwow\n"}}.get(service, {})
    inner = st.dictionaries(st.sampled_from([*good, "bogus"]), scalars, max_size=3)
    as_list = st.lists(st.fixed_dictionaries({"name": st.sampled_from([*good, "x"]), "value": scalars}),
                       max_size=3)
    unique = fresh.map(lambda n: {k: f"{v}{n}" for k, v in good.items()})
    valid = st.one_of(unique, unique.map(json.dumps),
                      unique.map(lambda g: [{"name": k, "value": v} for k, v in g.items()]))
    broken = st.one_of(inner, as_list, as_list.map(lambda v: json.dumps(v, ensure_ascii=True)), values)
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: valid if ok else broken)


def maybe(strategy, good, odds=4):
    """The good value `odds` times out of odds+1, otherwise anything the strategy makes."""
    return st.sampled_from([True] * odds + [False]).flatmap(
        lambda ok: st.just(good) if ok else strategy)


@st.composite
def add_params(draw):
    service = draw(st.sampled_from(SERVICES))
    params = {"action": "add", "service": draw(maybe(st.one_of(numeric_text, scalars), service))}
    if service != "7788":
        params[draw(st.sampled_from(["link", "target", "target_link"]))] = draw(
            maybe(links, draw(good_links)))
    if service in ("7788", "1236"):
        params[draw(st.sampled_from(["fields", "inputs", "custom_fields"]))] = draw(fields_for(service))
    bad_quantity = st.one_of(numbers, numeric_text)
    if service == "1234":
        params["quantity"] = draw(maybe(bad_quantity, str(draw(st.integers(100, 2000)))))
    elif service == "7788":  # a pack of 10: quantity optional
        if draw(st.booleans()):
            params["quantity"] = draw(maybe(bad_quantity, 10, odds=2))
    elif draw(st.booleans()):  # optional for a package (1) and for lines (their count)
        params["quantity"] = draw(maybe(bad_quantity, "1" if service == "1235" else 3, odds=2))
    if draw(st.booleans()):
        params[draw(st.sampled_from(["coupon", "coupon_code"]))] = draw(maybe(scalars, COUPON))
    if draw(st.integers(0, 3)) == 0:  # drip-feed (1234 has it)
        params["runs"] = draw(maybe(st.one_of(numbers, numeric_text), str(draw(st.integers(2, 5)))))
        params["interval"] = draw(maybe(st.one_of(numbers, numeric_text), "10"))
    if draw(st.integers(0, 3)) == 0:
        params["idempotency_key"] = draw(maybe(odd_text, f"idem-{draw(fresh)}"))
    if draw(st.integers(0, 3)) == 0:
        params.update(draw(st.dictionaries(names, values, max_size=2)))
    return params


@st.composite
def status_params(draw):
    params = {"action": draw(st.sampled_from(["status", "status", " status"]))}
    if draw(st.booleans()):
        params["order"] = draw(order_ids)
    else:
        batch = draw(st.lists(order_ids, max_size=6))
        params["orders"] = draw(st.sampled_from([
            ",".join(map(str, batch)), batch, " , ".join(map(str, batch)) + ","]))
    if draw(st.integers(0, 3)) == 0:
        params.update(draw(st.dictionaries(names, values, max_size=2)))
    return params


@st.composite
def after_params(draw):
    """refill, refill_status and cancel: one id or a list, of orders or refills that exist, do
    not, or are not ids at all."""
    action = draw(st.sampled_from(["refill", "cancel", "refill_status", " Refill ", "CANCEL"]))
    single, batch = (("refill", "refills") if action == "refill_status" else ("order", "orders"))
    ids = st.one_of(order_ids, st.integers(5001, 5010).map(lambda n: f"REF-{n}"),
                    st.integers(5001, 5010))
    params = {"action": action}
    if draw(st.booleans()):
        params[single] = draw(ids)
    else:
        chosen = draw(st.lists(ids, max_size=6))
        params[batch] = draw(st.sampled_from([",".join(map(str, chosen)), chosen]))
    if draw(st.integers(0, 3)) == 0:
        params.update(draw(st.dictionaries(names, values, max_size=2)))
    return params


any_params = st.dictionaries(names, values, max_size=8).flatmap(
    lambda extra: st.fixed_dictionaries({}, optional={
        "action": st.one_of(st.sampled_from(ACTIONS), values),
        "service": st.one_of(st.sampled_from(SERVICES), numeric_text, values),
        "quantity": st.one_of(numbers, numeric_text, values),
        "fields": values, "orders": values, "order": order_ids,
        "link": links}).map(lambda base: {**extra, **base}))


# ---------------------------------------------------------------- encoding a request

def _text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


def flatten(params):
    """Form pairs as PHP's http_build_query writes nested values: fields[player_id]=1."""
    pairs = []

    def walk(name, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{name}[{key}]", inner)
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(f"{name}[{index}]", inner)
        else:
            pairs.append((name, _text(value)))
    for name, value in params.items():
        walk(name, value)
    return pairs


def _bytes(text):
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate goes out as its UTF-8 bytes


def urlencode(pairs):
    return "&".join(f"{quote(_bytes(k), safe='[]')}={quote(_bytes(v), safe='')}" for k, v in pairs)


def multipart(pairs, boundary="fuzzboundary"):
    parts = [b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="'
             + _bytes(k).replace(b'"', b"%22") + b'"\r\n\r\n' + _bytes(v) + b"\r\n" for k, v in pairs]
    return b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"


def latin1(text):
    """What a header can carry: latin-1, no line breaks (HTTP itself cannot send those)."""
    text = _text(text).replace("\r", " ").replace("\n", " ")
    return text.encode("latin-1", "replace").decode("latin-1")


KEY_PLACES = ["body", "query", "header", "bearer", "two same"]
ENCODINGS = ["form", "multipart", "json", "json text/plain", "json no type", "query", "split"]
BROKEN_KEY_PLACES = ["none", "two different"]
BROKEN_ENCODINGS = ["json array", "json scalar", "json invalid", "form text/plain"]


@st.composite
def requests(draw, params_strategy, deep=False):
    """A whole request: (method, path, params, key state, key place, encoding, headers, a
    wrong key). `deep` requests mostly carry the valid key in one place and a body that parses,
    so they get past the key checks to the action."""
    params = dict(draw(params_strategy))
    key_state = draw(maybe(st.sampled_from(["unapproved", "banned", "revoked", "wrong", "garbage"]),
                           "valid", odds=8 if deep else 2))
    place = draw(st.sampled_from(KEY_PLACES if deep else KEY_PLACES + BROKEN_KEY_PLACES))
    encoding = draw(st.sampled_from(ENCODINGS if deep else ENCODINGS + BROKEN_ENCODINGS))
    method = "GET" if encoding == "query" and draw(st.booleans()) else "POST"
    path = draw(st.sampled_from(["/api/v1", "/api/v1/", "/api/v2", "/api/v2/"]))
    headers = {}
    if draw(st.integers(0, 5)) == 0:
        headers["Idempotency-Key"] = latin1(draw(maybe(odd_text, f"idem-h{draw(fresh) % 50}",
                                                        odds=2)))
    return method, path, params, key_state, place, encoding, headers, draw(
        st.one_of(st.just(None), odd_text, st.from_regex(r"\Ask_[A-Za-z0-9_-]{43}\Z")))


def build(world, request):
    """The test client's arguments for a drawn request."""
    app, keys_by_state = world
    method, path, params, key_state, place, encoding, headers, wrong = request
    key = keys_by_state.get(key_state, wrong if key_state == "wrong" else "garbage\x01")
    key = key if key is not None else ""
    query = {}
    if place in ("body", "two same", "two different"):
        params = {**params, "key": key}
    if place == "query":
        query["key"] = key
    if place == "header" or place == "two same":
        headers["X-Api-Key"] = latin1(key)
    if place == "two different":
        headers["Authorization"] = "Bearer " + latin1(keys_by_state["revoked"])
    if place == "bearer":
        headers["Authorization"] = "Bearer " + latin1(key)
    kwargs = {"headers": headers}
    if encoding == "query" or encoding == "split":
        items = list(params.items())
        cut = len(items) if encoding == "query" else len(items) // 2
        query.update(dict(items[:cut]))
        params = dict(items[cut:])
    query_string = urlencode(flatten(query))
    if query_string:
        path = f"{path}?{query_string}"
    pairs = flatten(params)
    if encoding in ("form", "split"):
        kwargs.update(data=urlencode(pairs).encode("ascii"),
                      content_type="application/x-www-form-urlencoded")
    elif encoding == "form text/plain":
        kwargs.update(data=urlencode(pairs).encode("ascii"), content_type="text/plain")
    elif encoding == "multipart":
        kwargs.update(data=multipart(pairs), content_type="multipart/form-data; boundary=fuzzboundary")
    elif encoding.startswith("json"):
        text = json.dumps(params)  # ensure_ascii: a lone surrogate becomes its \ud800 escape
        if encoding == "json array":
            text = json.dumps([params])
        elif encoding == "json scalar":
            text = json.dumps(params.get("action"))
        elif encoding == "json invalid":
            text = text[:-1]
        content_type = {"json text/plain": "text/plain", "json no type": None}.get(encoding, "application/json")
        kwargs["data"] = text.encode("ascii")
        if content_type:
            kwargs["content_type"] = content_type
    return method, path, kwargs


# ---------------------------------------------------------------- the property

def check(world, request, seen: Counter):
    method, path, kwargs = build(world, request)
    response = world[0].test_client().open(path, method=method, **kwargs)
    assert response.status_code == 200, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/json"
    assert response.headers.get(REQUEST_ID_HEADER)
    body = json.loads(response.get_data())
    if isinstance(body, dict) and "error" in body:
        assert set(body) == {"error", "code"}, body
        assert body["code"] in CODES, body
        assert isinstance(body["error"], str) and body["error"]
        seen[body["code"]] += 1
        return body
    entries = body if isinstance(body, list) else [body]
    for entry in entries:
        assert "error" not in entry, body
    action = request[2].get("action")
    name = action.strip().lower() if isinstance(action, str) else None
    if name == "add":
        assert set(body) == {"order", "charge", "currency", "balance"}, body
    elif name == "balance":
        assert set(body) == {"balance", "currency"}, body
    seen[f"ok {name}"] += 1
    return body


def fuzz(world, strategy) -> Counter:
    """Send every request the strategy draws; what came back, counted; then the audit."""
    seen = Counter()

    @given(strategy)
    def run(request):
        check(world, request, seen)
    run()
    result = world[0].test_cli_runner().invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output
    return seen


def test_fuzz_any_request(world):
    seen = fuzz(world, requests(any_params))
    assert seen["ok balance"] and seen["invalid_key"] and seen["missing_key"], seen


def test_fuzz_add(world):
    seen = fuzz(world, requests(add_params(), deep=True))
    assert seen["ok add"] >= 10 and seen["invalid_quantity"] and seen["invalid_fields"], seen


def test_fuzz_status(world):
    seen = fuzz(world, requests(status_params(), deep=True))
    assert seen["ok status"] >= 10, seen


def test_fuzz_refill_and_cancel(world):
    seen = fuzz(world, requests(after_params(), deep=True))
    assert seen["ok refill"] and seen["ok cancel"] and seen["ok refill_status"], seen
