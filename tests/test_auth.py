"""Credentials (docs/CONTRACT.md): four key sources that must agree, the authentication errors in
their order, one active key per account, keys stored only as a hash, last-used bookkeeping
that keeps read-only requests free of writes."""
import glob
import hashlib
import re
import time

import pytest
from freezegun import freeze_time
from sqlalchemy import select, update

from serva import accounts, db, keys
from serva.auth import flush_key_uses
from serva.schema import api_keys

from conftest import make_partner

BALANCE = {"balance": "100", "currency": "USD"}
MESSAGES = {
    "missing_key": "API key is required",
    "invalid_key": "Invalid API key",
    "ambiguous_key": "Conflicting API keys in one request",
    "key_revoked": "API key has been revoked",
    "account_banned": "Account is banned",
    "api_access_not_approved": "API access is not approved for this account",
}


def call(client, key_in=(), key=None, action="balance", json_body=False, other_key=None, **extra):
    """POST `action` with `key` placed in each of `key_in` (a source name or a (source, key) pair)."""
    query, body, headers = {}, {"action": action, **extra}, {}
    for place in key_in:
        source, value = place if isinstance(place, tuple) else (place, key)
        if source == "body":
            body["key"] = value
        elif source == "query":
            query["key"] = value
        elif source == "x-api-key":
            headers["X-Api-Key"] = value
        elif source == "bearer":
            headers["Authorization"] = f"Bearer {value}"
        else:
            raise AssertionError(source)
    if json_body:
        response = client.post("/api/v1", query_string=query, json=body, headers=headers)
    else:
        response = client.post("/api/v1", query_string=query, data=body, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def assert_error(body, code):
    assert body == {"error": MESSAGES[code], "code": code}


def set_account(app, account_id, **values):
    with app.app_context(), db.write() as conn:
        if "banned" in values:
            accounts.set_banned(conn, account_id, values["banned"], "test")
        if "api_access" in values:
            accounts.set_api_access(conn, account_id, values["api_access"])


def new_key(app, account_id):
    with app.app_context(), db.write() as conn:
        return keys.create_key(conn, account_id)


def key_row(app, account_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(api_keys).where(api_keys.c.account_id == account_id)
                            .order_by(api_keys.c.id.desc())).first()


WRITES = re.compile(r"^\s*(BEGIN|INSERT|UPDATE|DELETE|REPLACE|COMMIT)\b", re.IGNORECASE)


# ---------------------------------------------------------------- the four sources

SOURCES = ["body", "query", "x-api-key", "bearer"]


@pytest.mark.parametrize("source", SOURCES)
def test_each_key_source_works_alone(client, partner, source):
    assert call(client, [source], partner[1]) == BALANCE


@pytest.mark.parametrize("source", SOURCES)
def test_each_key_source_works_with_a_json_body(client, partner, source):
    assert call(client, [source], partner[1], json_body=True) == BALANCE


def test_key_in_a_get_query_string(client, partner):
    response = client.get(f"/api/v1?action=balance&key={partner[1]}")
    assert response.get_json() == BALANCE


def test_key_in_a_multipart_body(client, partner):
    response = client.post("/api/v1", data={"action": "balance", "key": partner[1]},
                           content_type="multipart/form-data")
    assert response.get_json() == BALANCE


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(client, partner, scheme):
    response = client.post("/api/v1", data={"action": "balance"},
                           headers={"Authorization": f"{scheme} {partner[1]}"})
    assert response.get_json() == BALANCE


def test_other_authorization_schemes_are_not_keys(client, partner):
    response = client.post("/api/v1", data={"action": "balance"},
                           headers={"Authorization": f"Basic {partner[1]}"})
    assert_error(response.get_json(), "missing_key")


@pytest.mark.parametrize("places", [
    ["body", "query"], ["body", "x-api-key"], ["body", "bearer"], ["query", "x-api-key"],
    ["query", "bearer"], ["x-api-key", "bearer"], SOURCES,
])
def test_the_same_key_in_several_places_is_fine(client, partner, places):
    assert call(client, places, partner[1]) == BALANCE
    assert call(client, places, partner[1], json_body=True) == BALANCE


def test_the_same_key_twice_in_the_query_is_fine(client, partner):
    response = client.get(f"/api/v1?action=balance&key={partner[1]}&key={partner[1]}")
    assert response.get_json() == BALANCE


def test_surrounding_whitespace_is_not_part_of_the_key(client, partner):
    assert call(client, [("body", f" {partner[1]}\n"), ("x-api-key", partner[1])]) == BALANCE


def test_an_empty_key_field_is_ignored_when_a_header_carries_the_key(client, partner):
    assert call(client, [("body", ""), ("bearer", partner[1])]) == BALANCE


@pytest.mark.parametrize("first, second", [
    ("body", "query"), ("body", "x-api-key"), ("body", "bearer"), ("query", "x-api-key"),
    ("query", "bearer"), ("x-api-key", "bearer"),
])
@pytest.mark.parametrize("json_body", [False, True])
def test_different_keys_in_two_places_are_ambiguous(app, client, partner, first, second, json_body):
    _, other = make_partner(app, email="other@example.com")
    body = call(client, [(first, partner[1]), (second, other)], json_body=json_body)
    assert_error(body, "ambiguous_key")


def test_two_different_query_keys_are_ambiguous(app, client, partner):
    _, other = make_partner(app, email="other@example.com")
    response = client.get(f"/api/v1?action=balance&key={partner[1]}&key={other}")
    assert_error(response.get_json(), "ambiguous_key")


def test_two_different_form_keys_are_ambiguous(app, client, partner):
    _, other = make_partner(app, email="other@example.com")
    from werkzeug.datastructures import MultiDict
    response = client.post("/api/v1", data=MultiDict([("action", "balance"), ("key", partner[1]),
                                                      ("key", other)]))
    assert_error(response.get_json(), "ambiguous_key")


def test_a_valid_key_next_to_garbage_is_ambiguous_not_accepted(client, partner):
    assert_error(call(client, [("body", partner[1]), ("x-api-key", "garbage")]), "ambiguous_key")
    assert_error(call(client, [("query", "sk_wrong"), ("bearer", partner[1])]), "ambiguous_key")


def test_a_json_key_of_another_type_next_to_the_real_key_is_ambiguous(client, partner):
    response = client.post("/api/v1", json={"action": "balance", "key": 12345},
                           headers={"X-Api-Key": partner[1]})
    assert_error(response.get_json(), "ambiguous_key")


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("json_body", [False, True])
def test_missing_key(client, partner, json_body):
    assert_error(call(client, [], json_body=json_body), "missing_key")


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_key_is_missing(client, partner, blank):
    assert_error(call(client, ["body", "query"], key=blank), "missing_key")


def test_unknown_but_well_formed_key_is_invalid(client, partner):
    unknown = keys.RAW_PREFIX + "A" * 43
    assert keys.looks_like_key(unknown)
    assert_error(call(client, ["body"], unknown), "invalid_key")


@pytest.mark.parametrize("mangle", [
    lambda k: k[:-1],                    # one character short
    lambda k: k + "A",                   # one too many
    lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # last character changed
    lambda k: k.upper() if k.upper() != k else k.lower(),
    lambda k: k[3:],                     # without the prefix
    lambda k: "pk_" + k[3:],
    lambda k: k.replace("_", "%", 1),
    lambda k: "x",
    lambda k: "sk_" + "é" * 43,
    lambda k: "' OR 1=1 --",
])
def test_malformed_or_altered_key_is_invalid(client, partner, mangle):
    assert_error(call(client, ["body"], mangle(partner[1])), "invalid_key")


@pytest.mark.parametrize("value", [12345, 1.5, True, ["k"], {"k": "v"}])
def test_a_json_key_that_is_not_text_is_invalid(client, partner, value):
    response = client.post("/api/v1", json={"action": "balance", "key": value})
    assert_error(response.get_json(), "invalid_key")


def test_revoked_key(app, client, partner):
    account_id, old = partner
    new_key(app, account_id)
    assert_error(call(client, ["body"], old), "key_revoked")


def test_key_revoked_without_a_replacement(app, client, partner):
    with app.app_context(), db.write() as conn:
        assert keys.revoke_key(conn, partner[0]) is True
    assert_error(call(client, ["x-api-key"], partner[1]), "key_revoked")


def test_banned_account(app, client, partner):
    set_account(app, partner[0], banned=True)
    assert_error(call(client, ["bearer"], partner[1]), "account_banned")


def test_unbanned_account_works_again(app, client, partner):
    set_account(app, partner[0], banned=True)
    set_account(app, partner[0], banned=False)
    assert call(client, ["body"], partner[1]) == BALANCE


@pytest.mark.parametrize("state", ["none", "requested"])
def test_api_access_not_approved(app, client, partner, state):
    set_account(app, partner[0], api_access=state)
    assert_error(call(client, ["query"], partner[1]), "api_access_not_approved")


def test_a_partner_made_without_approval_is_not_approved(app, client):
    _, key = make_partner(app, email="new@example.com", approved=False)
    assert_error(call(client, ["body"], key), "api_access_not_approved")


def test_approval_lets_the_key_in(app, client):
    account_id, key = make_partner(app, email="new@example.com", approved=False)
    set_account(app, account_id, api_access="approved")
    assert call(client, ["body"], key) == BALANCE


@pytest.mark.parametrize("action", ["balance", "services", "add", "status", "bogus", None])
def test_authentication_comes_before_the_action(app, client, partner, action):
    set_account(app, partner[0], banned=True)
    params = {"key": partner[1]} if action is None else {"key": partner[1], "action": action}
    assert_error(client.post("/api/v1", data=params).get_json(), "account_banned")
    assert_error(client.post("/api/v1", data={k: v for k, v in params.items() if k != "key"})
                 .get_json(), "missing_key")


# ---------------------------------------------------------------- order of the errors

def test_order_ambiguous_before_invalid(client, partner):
    assert_error(call(client, [("body", "junk1"), ("query", "junk2")]), "ambiguous_key")


def test_order_revoked_key_of_a_banned_unapproved_account_is_revoked(app, client, partner):
    account_id, old = partner
    new_key(app, account_id)
    set_account(app, account_id, banned=True, api_access="none")
    assert_error(call(client, ["body"], old), "key_revoked")


def test_order_banned_before_not_approved(app, client, partner):
    set_account(app, partner[0], banned=True, api_access="none")
    assert_error(call(client, ["body"], partner[1]), "account_banned")


def test_order_revoked_before_banned(app, client, partner):
    with app.app_context(), db.write() as conn:
        keys.revoke_key(conn, partner[0])
    set_account(app, partner[0], banned=True)
    assert_error(call(client, ["body"], partner[1]), "key_revoked")


def test_order_missing_before_anything_else(app, client, partner):
    set_account(app, partner[0], banned=True, api_access="none")
    assert_error(call(client, []), "missing_key")


# ---------------------------------------------------------------- keys

def test_keys_are_random_and_long(app, partner):
    made = {new_key(app, partner[0]) for _ in range(50)}
    assert len(made) == 50
    for raw in made:
        # sk_ + 43 url-safe base64 characters = 256 bits of entropy
        assert re.fullmatch(r"sk_[A-Za-z0-9_-]{43}", raw)


def test_a_new_key_revokes_the_old_one(app, client, partner):
    account_id, first = partner
    second = new_key(app, account_id)
    third = new_key(app, account_id)
    assert len({first, second, third}) == 3
    assert call(client, ["body"], third) == BALANCE
    assert_error(call(client, ["body"], first), "key_revoked")
    assert_error(call(client, ["body"], second), "key_revoked")
    with app.app_context(), db.read() as conn:
        rows = conn.execute(select(api_keys).where(api_keys.c.account_id == account_id)).all()
    assert len(rows) == 3
    assert [row.revoked_at is None for row in rows].count(True) == 1


def test_one_active_key_per_account_is_enforced_by_the_database(app, partner):
    from sqlalchemy.exc import IntegrityError
    with pytest.raises(IntegrityError):
        with app.app_context(), db.write() as conn:
            conn.execute(api_keys.insert().values(account_id=partner[0], key_hash="0" * 64,
                                                  prefix="sk_x", created_at=1))


def test_keys_of_two_accounts_are_independent(app, client, partner):
    other_id, other = make_partner(app, email="other@example.com", balance="7.5")
    new_key(app, other_id)  # revokes only the other account's key
    assert call(client, ["body"], partner[1]) == BALANCE
    assert_error(call(client, ["body"], other), "key_revoked")


def _database_bytes(app):
    path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    data = b""
    for name in glob.glob(path + "*"):  # the file, its -wal and -shm
        with open(name, "rb") as handle:
            data += handle.read()
    return data


def test_the_raw_key_is_stored_nowhere_only_its_hash(app, client, partner):
    raw = partner[1]
    assert call(client, ["body"], raw) == BALANCE
    data = _database_bytes(app)
    digest = hashlib.sha256(raw.encode()).hexdigest()
    assert digest.encode() in data           # the hash is there (the search works)...
    assert raw.encode() not in data          # ...the key is not
    assert raw[10:].encode() not in data     # not even the part after the display prefix
    assert raw.encode("utf-16-le") not in data


def test_the_key_comparison_is_constant_time(app, client, partner, monkeypatch):
    import hmac
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert call(client, ["body"], partner[1]) == BALANCE
    digest = hashlib.sha256(partner[1].encode()).hexdigest()
    assert (digest, digest) in calls


# ---------------------------------------------------------------- last used

def test_last_used_is_recorded_on_first_use_off_the_request_path(app, client, partner, sql_log):
    """The request itself writes nothing; the background timer records the use a second later."""
    assert key_row(app, partner[0]).last_used_at is None
    with freeze_time("2030-01-01 12:00:00"):
        assert call(client, ["body"], partner[1]) == BALANCE
        expected = db.now()
    assert sql_log and not [s for s in sql_log if WRITES.match(s)]  # nothing written in the request
    deadline = time.monotonic() + 10
    while key_row(app, partner[0]).last_used_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key_row(app, partner[0]).last_used_at == expected


def test_a_failed_authentication_records_no_use(app, client, partner):
    set_account(app, partner[0], banned=True)
    call(client, ["body"], partner[1])
    assert key_row(app, partner[0]).last_used_at is None


def test_a_second_read_within_the_interval_writes_nothing(app, client, partner, sql_log):
    with freeze_time("2030-01-01 12:00:00") as frozen:
        assert call(client, ["body"], partner[1]) == BALANCE
        flush_key_uses(app)
        assert any(WRITES.match(s) and "UPDATE" in s.upper() for s in sql_log)  # the first use
        first = key_row(app, partner[0]).last_used_at
        assert first == db.now()
        frozen.tick(app.config["KEY_LAST_USED_INTERVAL"] - 1)
        del sql_log[:]
        assert call(client, ["body"], partner[1]) == BALANCE
        assert call(client, ["query"], partner[1], action="services") == []
        assert sql_log, "the trace captured nothing: the test would prove nothing"
        assert [s for s in sql_log if WRITES.match(s)] == []
        assert not any("IMMEDIATE" in s.upper() for s in sql_log)
    assert key_row(app, partner[0]).last_used_at == first


def test_last_used_is_recorded_again_after_the_interval(app, client, partner):
    interval = app.config["KEY_LAST_USED_INTERVAL"]
    with freeze_time("2030-01-01 12:00:00") as frozen:
        call(client, ["body"], partner[1])
        flush_key_uses(app)
        first = key_row(app, partner[0]).last_used_at
        frozen.tick(interval + 1)
        assert call(client, ["body"], partner[1]) == BALANCE
        flush_key_uses(app)
        assert key_row(app, partner[0]).last_used_at == first + interval + 1


def test_the_interval_is_a_setting(tmp_path):
    from serva import create_app
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "KEY_LAST_USED_INTERVAL": 3600,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'i.sqlite'}"})
    db.init_schema(app.extensions["serva.engine"])
    account_id, key = make_partner(app)
    client = app.test_client()
    with freeze_time("2030-01-01 12:00:00") as frozen:
        call(client, ["body"], key)
        flush_key_uses(app)
        first = key_row(app, account_id).last_used_at
        assert first == db.now()
        frozen.tick(600)
        call(client, ["body"], key)
        flush_key_uses(app)
    assert key_row(app, account_id).last_used_at == first
    app.extensions["serva.engine"].dispose()


def test_a_revoked_key_keeps_its_history_but_is_not_touched(app, client, partner):
    with freeze_time("2030-01-01 12:00:00"):
        call(client, ["body"], partner[1])
        flush_key_uses(app)
    with app.app_context(), db.write() as conn:
        conn.execute(update(api_keys).where(api_keys.c.account_id == partner[0])
                     .values(revoked_at=1))
    with freeze_time("2030-01-02 12:00:00"):
        assert_error(call(client, ["body"], partner[1]), "key_revoked")
    with freeze_time("2030-01-01 12:00:00"):
        assert key_row(app, partner[0]).last_used_at == db.now()
