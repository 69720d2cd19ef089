"""The /api/v1 transport (docs/CONTRACT.md, Transport): methods, where parameters come from, the
request id, JSON on every response, real statuses for 404/405/413/500, and no 500 for any
malformed request."""
import json
import logging
import re

import pytest
import requests
from werkzeug.datastructures import MultiDict

from serva import REQUEST_ID_HEADER, api, create_app
from serva.spec import Action

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def echo(monkeypatch):
    """An extra action in the dispatch table that returns the merged parameters it was given."""
    monkeypatch.setitem(api.ACTIONS, "echo", Action(lambda account, params: params, "echo"))


def assert_json(response):
    """Every response: JSON content type, a request id header, a body that parses as JSON."""
    assert response.mimetype == JSON, response.headers.get("Content-Type")
    assert response.headers.get(REQUEST_ID_HEADER)
    return json.loads(response.get_data())


def assert_api_error(response, code):
    assert response.status_code == 200
    body = assert_json(response)
    assert set(body) == {"error", "code"}
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    return body


# ---------------------------------------------------------------- methods and sources

def test_get_with_the_query_string(client, partner):
    response = client.get("/api/v1", query_string={"action": "balance", "key": partner[1]})
    assert response.status_code == 200
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_post_form(client, partner):
    response = client.post("/api/v1", data={"action": "balance", "key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_post_multipart_form(client, partner):
    response = client.post("/api/v1", data={"action": "balance", "key": partner[1]},
                           content_type="multipart/form-data")
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_post_json_object(client, partner):
    response = client.post("/api/v1", json={"action": "balance", "key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_post_with_everything_in_the_query_string(client, partner):
    response = client.post("/api/v1", query_string={"action": "balance", "key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_query_and_form_are_merged(client, partner):
    response = client.post("/api/v1?action=balance", data={"key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_query_and_json_are_merged(client, partner):
    response = client.post(f"/api/v1?key={partner[1]}", json={"action": "balance"})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_the_body_wins_over_the_query_string(client, partner):
    response = client.post("/api/v1?action=services", data={"action": "balance", "key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}
    response = client.post("/api/v1?action=services", json={"action": "balance", "key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_all_sources_merge_into_one_parameter_set(client, partner, echo):
    response = client.post("/api/v1?action=echo&from_query=q&both=query",
                           data={"key": partner[1], "from_form": "f", "both": "form"})
    params = assert_json(response)
    assert params == {"action": "echo", "key": partner[1], "from_query": "q",
                      "from_form": "f", "both": "form"}


def test_json_values_keep_their_types(client, partner, echo):
    body = {"action": "echo", "key": partner[1], "fields": {"player_id": "1"}, "quantity": 100,
            "list": [{"name": "a", "value": "b"}], "flag": True, "nothing": None}
    assert assert_json(client.post("/api/v1", json=body)) == body


# ---------------------------------------------------------------- PHP-style nested keys

def test_php_nested_object_keys(client, partner, echo):
    params = assert_json(client.post("/api/v1", data={
        "action": "echo", "key": partner[1],
        "fields[player_id]": "123456789", "fields[server_id]": "55"}))
    assert params["fields"] == {"player_id": "123456789", "server_id": "55"}


def test_php_nested_keys_exactly_as_http_build_query_encodes_them(client, partner, echo):
    # http_build_query percent-encodes the brackets
    body = (f"action=echo&key={partner[1]}"
            "&fields%5Bplayer_id%5D=123456789&fields%5Bserver_id%5D=55")
    params = assert_json(client.post("/api/v1", data=body, content_type=FORM))
    assert params["fields"] == {"player_id": "123456789", "server_id": "55"}


def test_php_list_of_objects(client, partner, echo):
    params = assert_json(client.post("/api/v1", data={
        "action": "echo", "key": partner[1],
        "fields[0][name]": "player_id", "fields[0][value]": "1",
        "fields[1][name]": "server_id", "fields[1][value]": "55"}))
    assert params["fields"] == [{"name": "player_id", "value": "1"},
                                {"name": "server_id", "value": "55"}]


def test_php_empty_brackets_append(client, partner, echo):
    body = f"action=echo&key={partner[1]}&links[]=a&links[]=b&links[]=c"
    params = assert_json(client.post("/api/v1", data=body, content_type=FORM))
    assert params["links"] == ["a", "b", "c"]


def test_php_nested_keys_in_the_query_string(client, partner, echo):
    params = assert_json(client.get(
        f"/api/v1?action=echo&key={partner[1]}&fields[player_id]=7&fields[server_id]=8"))
    assert params["fields"] == {"player_id": "7", "server_id": "8"}


def test_php_nested_keys_in_multipart(client, partner, echo):
    params = assert_json(client.post("/api/v1", data={
        "action": "echo", "key": partner[1], "fields[player_id]": "9"},
        content_type="multipart/form-data"))
    assert params["fields"] == {"player_id": "9"}


def test_numbered_keys_that_are_not_a_list_stay_an_object(client, partner, echo):
    params = assert_json(client.post("/api/v1", data={
        "action": "echo", "key": partner[1], "m[1]": "a", "m[5]": "b"}))
    assert params["m"] == {"1": "a", "5": "b"}


def test_nesting_too_deep_is_an_error_not_a_crash(client, partner):
    body = assert_api_error(client.post("/api/v1", data={
        "action": "balance", "key": partner[1], "a[1][2][3][4][5][6][7][8]": "x"}), "invalid_request")
    assert body["error"].startswith("Incorrect request")


# ---------------------------------------------------------------- URL and methods

@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/", "/api/v2", "/api/v2/"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_with_or_without_trailing_slash_and_no_redirect(client, partner, path, method):
    if method == "GET":
        response = client.get(path, query_string={"action": "balance", "key": partner[1]})
    else:
        response = client.post(path, data={"action": "balance", "key": partner[1]})
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


@pytest.mark.parametrize("path", ["/api//v1", "/api/v1//", "//api/v1"])
def test_doubled_slashes_are_not_answered_with_a_redirect(client, path):
    response = client.post(path, data={"action": "balance"})
    assert not 300 <= response.status_code < 400
    assert "Location" not in response.headers
    assert_json(response)


def test_api_v2_answers_exactly_like_v1(client, partner, catalog):
    """The same endpoint: an order placed through one is seen through the other, errors alike."""
    order = client.post("/api/v2", data={"action": "add", "key": partner[1], "service": "1234",
                                         "link": "https://example.com/p", "quantity": "100"})
    number = assert_json(order)["order"]
    for path in ("/api/v1", "/api/v2/"):
        status = client.post(path, data={"action": "status", "order": number, "key": partner[1]})
        assert assert_json(status)["status"] == "Pending"
    for params in ({"action": "services", "key": partner[1]}, {"action": "nope", "key": partner[1]},
                   {"action": "balance"}, {"action": "status", "key": partner[1]}):
        v1, v2 = client.post("/api/v1", data=params), client.post("/api/v2", data=params)
        assert (v2.status_code, v2.get_json()) == (v1.status_code, v1.get_json())


@pytest.mark.parametrize("path", ["/api/v1", "/api/v2/"])
def test_the_api_opens_no_cookie_session(client, partner, path):
    """The dashboard's session cookie is neither read nor answered on the API."""
    client.set_cookie("session", "garbage")
    response = client.post(path, data={"action": "balance", "key": partner[1]})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")


def test_head_is_json_too(client):
    response = client.head("/api/v1")
    assert response.status_code == 200
    assert response.mimetype == JSON
    assert response.headers.get(REQUEST_ID_HEADER)


@pytest.mark.parametrize("path", ["/nope", "/api/v3", "/api/v0", "/api/v1/balance", "/api/v2/balance",
                                  "/api/v1.php"])
def test_404_is_json_with_a_request_id(client, path):
    response = client.post(path, data={"action": "balance"})
    assert response.status_code == 404
    body = assert_json(response)
    assert body["code"] == "not_found" and body["error"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_405_is_json_with_a_request_id_and_allow(client, method):
    response = client.open("/api/v1", method=method, data={"action": "balance"})
    assert response.status_code == 405
    body = assert_json(response)
    assert body["code"] == "method_not_allowed" and body["error"]
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed


def test_options_is_answered_in_json(client):
    response = client.open("/api/v1", method="OPTIONS")
    assert response.status_code != 500
    assert_json(response)


@pytest.mark.parametrize("content_type", [FORM, "multipart/form-data", JSON,
                                          "application/octet-stream", None])
def test_413_for_a_body_over_the_limit(client, partner, content_type):
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    filler = "x" * (limit + 1)
    if content_type == JSON:
        data = json.dumps({"action": "balance", "key": partner[1], "pad": filler})
    elif content_type == "multipart/form-data":
        data = {"action": "balance", "key": partner[1], "pad": filler}
    else:
        data = f"action=balance&key={partner[1]}&pad={filler}"
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post("/api/v1", data=data, **kwargs)
    assert response.status_code == 413
    body = assert_json(response)
    assert body["error"] and body["code"] == "request_entity_too_large"


def test_the_size_limit_is_a_setting(tmp_path):
    from serva import create_app, db
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "MAX_CONTENT_LENGTH": 1000,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'small.sqlite'}"})
    db.init_schema(app.extensions["serva.engine"])
    client = app.test_client()
    assert client.post("/api/v1", data={"action": "balance", "pad": "x" * 2000}).status_code == 413
    assert_api_error(client.post("/api/v1", data={"action": "balance", "pad": "x" * 500}),
                     "missing_key")
    app.extensions["serva.engine"].dispose()


def test_413_from_the_real_server_too(live_server):
    response = requests.post(live_server + "/api/v1", data={"action": "balance", "pad": "x" * 300_000},
                             timeout=30)
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith(JSON)
    assert response.headers.get(REQUEST_ID_HEADER)
    assert response.json()["code"] == "request_entity_too_large"


def test_413_for_a_chunked_body_without_content_length(live_server):
    def chunks():
        for _ in range(40):
            yield b"pad=" + b"x" * 10_000 + b"&"
    response = requests.post(live_server + "/api/v1", data=chunks(), timeout=30,
                             headers={"Content-Type": FORM})
    assert response.status_code == 413
    assert response.json()["code"] == "request_entity_too_large"
    assert response.headers.get(REQUEST_ID_HEADER)


# ---------------------------------------------------------------- 500

def test_500_is_json_with_the_request_id_and_no_internals(app):
    def boom():
        raise RuntimeError("secret internal detail /srv/serva/db.py")
    app.add_url_rule("/test-boom", "test_boom", boom)
    response = app.test_client().get("/test-boom")
    assert response.status_code == 500
    body = assert_json(response)
    assert set(body) == {"error", "code", "request_id"}
    assert body["code"] == "internal_error"
    assert body["request_id"] == response.headers[REQUEST_ID_HEADER]
    text = response.get_data(as_text=True)
    assert "secret internal detail" not in text
    assert "Traceback" not in text and "RuntimeError" not in text and ".py" not in text


def test_500_inside_an_action_is_json_with_the_request_id(client, partner, monkeypatch):
    def broken(account, params):
        raise KeyError("internal-key-name")
    monkeypatch.setitem(api.ACTIONS, "broken", Action(broken, "broken"))
    response = client.post("/api/v1", data={"action": "broken", "key": partner[1]})
    assert response.status_code == 500
    body = assert_json(response)
    assert body["code"] == "internal_error"
    assert body["request_id"] == response.headers[REQUEST_ID_HEADER]
    assert "internal-key-name" not in response.get_data(as_text=True)


def test_500_is_logged_with_the_request_id(client, partner, monkeypatch, caplog):
    monkeypatch.setitem(api.ACTIONS, "broken", Action(lambda account, params: 1 / 0, "broken"))
    with caplog.at_level(logging.ERROR):
        response = client.post("/api/v1", data={"action": "broken", "key": partner[1]})
    rid = response.headers[REQUEST_ID_HEADER]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(rid in r.getMessage() and r.exc_info for r in errors)


# ---------------------------------------------------------------- actions

@pytest.mark.parametrize("params", [
    {}, {"action": ""}, {"action": "   "}, {"action": "bogus"}, {"action": "Balance!"},
    {"action": "balance,services"}, {"action": "__class__"}, {"action": "get"},
])
def test_unknown_or_missing_action_is_incorrect_request(client, partner, params):
    body = assert_api_error(client.post("/api/v1", data={"key": partner[1], **params}),
                            "unknown_action")
    assert body["error"] == "Incorrect request"


@pytest.mark.parametrize("action", [1, 0, True, None, ["balance"], {"balance": 1}, 1.5])
def test_non_string_action_is_incorrect_request(client, partner, action):
    body = assert_api_error(client.post("/api/v1", json={"action": action, "key": partner[1]}),
                            "unknown_action")
    assert body["error"] == "Incorrect request"


def test_action_as_a_php_array_is_incorrect_request(client, partner):
    assert_api_error(client.post("/api/v1", data={"action[]": "balance", "key": partner[1]}),
                     "unknown_action")


def _repeated_action(client, key, where, *actions):
    pairs = [("action", action) for action in actions]
    if where == "query":
        return client.post("/api/v1", query_string=[*pairs, ("key", key)])
    body = MultiDict([*pairs, ("key", key)])
    return client.post("/api/v1", data=body, content_type=(
        "multipart/form-data" if where == "multipart" else FORM))


@pytest.mark.parametrize("where", ["form", "query", "multipart"])
def test_a_repeated_action_with_different_values_is_refused(client, partner, where):
    """As two different keys are: the request does not say which one it means."""
    for actions in (("services", "balance"), ("balance", "services"), ("balance", "bogus"),
                    ("balance", "balance", "add")):
        body = assert_api_error(_repeated_action(client, partner[1], where, *actions),
                                "ambiguous_action")
        assert body["error"] == "Conflicting actions in one request"


@pytest.mark.parametrize("where", ["form", "query", "multipart"])
def test_a_repeated_action_with_the_same_value_is_that_action(client, partner, where):
    for actions in (("balance", "balance"), ("balance", " Balance ")):
        response = _repeated_action(client, partner[1], where, *actions)
        assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_a_query_string_that_is_not_utf8_is_named_as_such(client, partner):
    # what a real server hands over for raw bytes in the URL (PEP 3333: latin-1 text)
    response = client.post("/api/v1", data={"action": "balance", "key": partner[1]},
                           environ_overrides={"QUERY_STRING": "c=\xff\xfe"})
    assert response.get_json() == {"error": "Incorrect request: the query string is not valid "
                                            "UTF-8", "code": "invalid_request"}


def test_a_success_body_has_no_error_key(client, partner):
    for action in ("balance", "services"):
        body = assert_json(client.post("/api/v1", data={"action": action, "key": partner[1]}))
        entries = body if isinstance(body, list) else [body]
        assert all("error" not in entry for entry in entries)


# ---------------------------------------------------------------- malformed input barrage

def _barrage(key):
    deep = b"[" * 100_000 + b"]" * 100_000
    multipart_bad_utf8 = (b'--b\r\nContent-Disposition: form-data; name="action"\r\n\r\nbal\xff\xfe\r\n'
                          b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\n' + key.encode()
                          + b"\r\n--b--\r\n")
    return {
        "bad json": dict(data=b'{"action": "balance", "key": ', content_type=JSON),
        "json array": dict(data=b'[{"action": "balance"}]', content_type=JSON),
        "json string": dict(data=b'"balance"', content_type=JSON),
        "json number": dict(data=b"42", content_type=JSON),
        "json null": dict(data=b"null", content_type=JSON),
        "json true": dict(data=b"true", content_type=JSON),
        "json deep nesting": dict(data=deep, content_type=JSON),
        "json deep nesting in a value": dict(
            data=b'{"action":"balance","key":"' + key.encode() + b'","x":' + deep + b"}",
            content_type=JSON),
        "json deep objects": dict(data=b'{"a":' * 50_000 + b"1" + b"}" * 50_000, content_type=JSON),
        "json huge integer": dict(data=b'{"action":"balance","quantity":' + b"9" * 6000 + b"}",
                                  content_type=JSON),
        "json NaN and Infinity": dict(
            data=b'{"action":"balance","key":"' + key.encode() + b'","q":NaN,"r":-Infinity}',
            content_type=JSON),
        "json duplicate keys": dict(data=b'{"action":"balance","action":"services"}', content_type=JSON),
        "json with BOM": dict(data=b'\xef\xbb\xbf{"action":"balance"}', content_type=JSON),
        "json invalid utf-8": dict(data=b'{"action":"bal\xff\xfeance"}', content_type=JSON),
        "json lone surrogate": dict(data=b'{"action":"\\ud800","key":"\\udfff"}', content_type=JSON),
        "json key types": dict(json={"action": "balance", "key": {"$ne": None}}),
        "json key list": dict(json={"action": "balance", "key": [key, key]}),
        "json key number": dict(json={"action": "balance", "key": 12345678901234567890}),
        "json key bool": dict(json={"action": "balance", "key": True}),
        "json key float": dict(json={"action": "balance", "key": 1e308}),
        "json bad charset": dict(data=json.dumps({"action": "balance"}),
                                 content_type="application/json; charset=no-such-charset"),
        "binary garbage, octet-stream": dict(data=bytes(range(256)) * 10,
                                             content_type="application/octet-stream"),
        "binary garbage, json": dict(data=bytes(range(255, -1, -1)) * 10, content_type=JSON),
        "binary garbage, form": dict(data=bytes(range(256)) * 10, content_type=FORM),
        "binary garbage, no content type": dict(data=b"\x00\x01\x02\xff" * 100),
        "nul bytes in a form": dict(data=b"action=bal%00ance&key=\x00" + key.encode(), content_type=FORM),
        "invalid utf-8 in a form": dict(data=b"action=balance&key=" + key.encode() + b"&c=\xff\xfe",
                                        content_type=FORM),
        "percent-encoded invalid utf-8 in a form": dict(
            data=b"action=balance&key=" + key.encode() + b"&c=%ff%fe", content_type=FORM),
        "broken percent escapes": dict(data=b"action=%zz&key=%&%%%=%", content_type=FORM),
        "invalid utf-8 in multipart": dict(data=multipart_bad_utf8,
                                           content_type="multipart/form-data; boundary=b"),
        "multipart without boundary": dict(data=b"action=balance", content_type="multipart/form-data"),
        "truncated multipart": dict(data=b'--b\r\nContent-Disposition: form-data; name="action"\r\n\r\nbal',
                                    content_type="multipart/form-data; boundary=b"),
        "multipart with the key as a file": dict(
            data=b'--b\r\nContent-Disposition: form-data; name="key"; filename="k.txt"\r\n'
                 b"Content-Type: text/plain\r\n\r\n" + key.encode() + b"\r\n--b--\r\n",
            content_type="multipart/form-data; boundary=b"),
        "form body sent as text/plain": dict(data=f"action=balance&key={key}", content_type="text/plain"),
        "xml body": dict(data=b"<request><action>balance</action></request>", content_type="application/xml"),
        "garbage content type": dict(data=b"action=balance", content_type=";;;=\x7f"),
        "form with odd bracket keys": dict(
            data=f"action=balance&key={key}&[]=1&a[=2&a]=3&a[b]c=4&a[][]=5&[x]=6&b[]=7&b[x]=8",
            content_type=FORM),
        "form key as an array": dict(data={"action": "balance", "key[]": key}),
        "form key as an object": dict(data={"action": "balance", "key[a]": key}),
        "form scalar then nested": dict(data=f"action=balance&key={key}&f=1&f[a]=2&f[a][b]=3",
                                        content_type=FORM),
        "form nested then scalar": dict(data=f"action=balance&key={key}&f[a][b]=3&f[a]=2&f=1",
                                        content_type=FORM),
        "many form fields": dict(data="&".join(f"p{i}=1" for i in range(40_000)), content_type=FORM),
        "many nested form fields": dict(data="&".join(f"f[{i}]=1" for i in range(20_000)), content_type=FORM),
        "many multipart parts": dict(data={f"p{i}": "1" for i in range(3000)},
                                     content_type="multipart/form-data"),
        "non-latin header key": dict(data={"action": "balance"}, headers={"X-Api-Key": "ключ"}),
        "bearer without token": dict(data={"action": "balance"}, headers={"Authorization": "Bearer"}),
        "other auth scheme": dict(data={"action": "balance"}, headers={"Authorization": "Basic Zm9vOmJhcg=="}),
        "empty authorization": dict(data={"action": "balance"}, headers={"Authorization": ""}),
        "very long key": dict(data={"action": "balance", "key": "sk_" + "A" * 200_000}),
    }


BARRAGE = list(_barrage("sk_placeholder"))


@pytest.mark.parametrize("case", BARRAGE)
def test_malformed_requests_never_500(client, partner, case):
    kwargs = _barrage(partner[1])[case]
    response = client.post("/api/v1", **kwargs)
    assert response.status_code in (200, 413), response.get_data()[:300]
    body = assert_json(response)
    if response.status_code == 200 and isinstance(body, dict) and "error" in body:
        assert set(body) == {"error", "code"}


@pytest.mark.parametrize("query", [
    "action=%ff%fe&key=%c3%28", "action=bal%00ance", "action[]=balance&action[x]=1",
    "a[1][2][3][4][5][6][7]=1", "%=%&&&==&key", "key=" + "x" * 5000, "&".join(["k=1"] * 20_000),
])
def test_malformed_query_strings_never_500(client, query):
    response = client.get("/api/v1?" + query)
    assert response.status_code == 200
    assert "error" in assert_json(response)


def test_an_invalid_json_body_is_a_clear_error(client, partner):
    body = assert_api_error(client.post("/api/v1", data=b'{"action": ', content_type=JSON),
                            "invalid_request")
    assert body["error"].startswith("Incorrect request")


def test_a_json_array_body_is_a_clear_error(client, partner):
    assert_api_error(client.post("/api/v1", data=json.dumps([{"action": "balance", "key": partner[1]}]),
                                 content_type=JSON), "invalid_request")


def test_deeply_nested_json_is_a_clear_error(client, partner):
    assert_api_error(client.post("/api/v1", data=b"[" * 100_000 + b"]" * 100_000, content_type=JSON),
                     "invalid_request")


def test_a_json_body_is_read_whatever_content_type_is_declared(client, partner):
    response = client.post("/api/v1", data=json.dumps({"action": "balance", "key": partner[1]}),
                           content_type="text/plain")
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_an_empty_body_with_a_json_content_type_uses_the_query(client, partner):
    response = client.post(f"/api/v1?action=balance&key={partner[1]}", data=b"", content_type=JSON)
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


# ---------------------------------------------------------------- request id and logs

def test_every_response_has_a_fresh_request_id(client, partner):
    responses = [client.post("/api/v1", data={"action": "balance", "key": partner[1]}) for _ in range(5)]
    responses += [client.get("/nope"), client.put("/api/v1"), client.post("/api/v1", data={})]
    ids = [r.headers[REQUEST_ID_HEADER] for r in responses]
    assert all(len(rid) >= 16 for rid in ids)
    assert len(set(ids)) == len(ids)


def test_the_request_id_is_in_the_access_log_line(client, partner, caplog):
    caplog.set_level(logging.INFO, logger="serva.access")
    for response in (client.post("/api/v1", data={"action": "balance", "key": partner[1]}),
                     client.get("/nope"), client.delete("/api/v1")):
        rid = response.headers[REQUEST_ID_HEADER]
        lines = [r.getMessage() for r in caplog.records
                 if r.name == "serva.access" and rid in r.getMessage()]
        assert len(lines) == 1
        assert str(response.status_code) in lines[0]
    assert len([r for r in caplog.records if r.name == "serva.access"]) == 3


def test_the_access_line_has_method_path_status_time_and_id_never_the_query(client, partner,
                                                                            caplog):
    caplog.set_level(logging.INFO, logger="serva.access")
    response = client.get(f"/api/v1/?action=balance&key={partner[1]}")
    lines = [r.getMessage() for r in caplog.records if r.name == "serva.access"]
    assert len(lines) == 1
    assert re.fullmatch(r"GET /api/v1/ 200 \d+\.\dms rid=([0-9a-f]{32})", lines[0]), lines[0]
    assert lines[0].endswith(f"rid={response.headers[REQUEST_ID_HEADER]}")


def test_the_request_id_is_in_the_access_log_for_a_500(client, partner, monkeypatch, caplog):
    monkeypatch.setitem(api.ACTIONS, "broken", Action(lambda account, params: 1 / 0, "broken"))
    caplog.set_level(logging.INFO, logger="serva.access")
    response = client.post("/api/v1", data={"action": "broken", "key": partner[1]})
    rid = response.headers[REQUEST_ID_HEADER]
    assert any(rid in r.getMessage() and "500" in r.getMessage()
               for r in caplog.records if r.name == "serva.access")


def test_the_key_never_appears_in_any_log_record(client, partner, monkeypatch, caplog):
    key = partner[1]
    monkeypatch.setitem(api.ACTIONS, "broken", Action(lambda account, params: 1 / 0, "broken"))
    caplog.set_level(logging.DEBUG)
    client.get(f"/api/v1?action=balance&key={key}")
    client.post(f"/api/v1?key={key}", data={"action": "services"})
    client.post("/api/v1", data={"action": "balance", "key": key})
    client.post("/api/v1", json={"action": "balance", "key": key})
    client.post("/api/v1", data={"action": "balance"}, headers={"X-Api-Key": key})
    client.post("/api/v1", data={"action": "balance"}, headers={"Authorization": f"Bearer {key}"})
    client.get(f"/api/v1/?action=bogus&key={key}")
    client.get(f"/api/v1?action=balance&key={key}x")  # invalid key
    client.get(f"/nope?key={key}")                    # 404
    client.put(f"/api/v1?key={key}")                  # 405
    client.get(f"/api/v1?action=broken&key={key}")    # 500
    client.post(f"/api/v1?key={key}", data={"pad": "x" * 300_000})  # 413
    assert len([r for r in caplog.records if r.name == "serva.access"]) == 12
    for record in caplog.records:
        assert key not in record.getMessage()
        assert key not in caplog.text
        assert key[3:20] not in caplog.text


def test_the_key_is_not_in_the_real_server_output(live_server, partner, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    key = partner[1]
    assert requests.get(live_server + f"/api/v1?action=balance&key={key}", timeout=10).json()["balance"]
    requests.get(live_server + f"/nope?key={key}", timeout=10)
    out, err = capfd.readouterr()
    server_side = [r for r in caplog.records if not r.name.startswith(("urllib3", "requests"))]
    assert any(r.name == "serva.access" for r in server_side)
    assert all(key not in r.getMessage() for r in server_side)
    assert key not in out and key not in err


def test_trusted_proxies_setting_reads_the_client_address_from_x_forwarded_for(tmp_path):
    from flask import request as flask_request

    def remote_addr_seen(trusted):
        app = create_app({"TESTING": True, "SECRET_KEY": "x", "TRUSTED_PROXIES": trusted,
                          "DATABASE_URL": f"sqlite:///{tmp_path / 'proxy.sqlite'}"})
        app.add_url_rule("/whoami", "whoami", lambda: flask_request.remote_addr or "")
        response = app.test_client().get("/whoami", headers={"X-Forwarded-For": "203.0.113.9"},
                                         environ_base={"REMOTE_ADDR": "10.0.0.1"})
        app.extensions["serva.engine"].dispose()
        return response.get_data(as_text=True)

    assert remote_addr_seen(0) == "10.0.0.1"
    assert remote_addr_seen(1) == "203.0.113.9"


def test_a_form_body_that_is_not_utf8_is_named_as_such(client, partner):
    response = client.post("/api/v1", data=b"action=balance&key=" + partner[1].encode() + b"&c=\xff\xfe",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.get_json() == {"error": "Incorrect request: the form body is not valid UTF-8",
                                   "code": "invalid_request"}


def test_every_answer_is_json_whatever_its_values():
    """Answers are encoded by orjson, and by the standard encoder for what orjson refuses (an
    integer beyond 64 bits): either way the body is the JSON of the payload, non-ASCII text
    included (written as UTF-8)."""
    import json as std_json

    from serva.api import _encode

    for payload in ({"balance": "12.5", "currency": "USD"},
                    {"n": 2 ** 70, "m": -(2 ** 64), "text": "é ☃ 😀 \u2028 \"q\" \\"},
                    [{"order": "ORD-1", "status": None, "remains": 0}]):
        body = _encode(payload)
        assert isinstance(body, bytes)
        assert std_json.loads(body.decode("utf-8")) == payload


