"""Rate limits: failed authentications per client address, requests per key; HTTP 429
`rate_limited` with Retry-After and the request id; counts shared through Redis, also between
the worker processes of a real `serva serve --workers 2`, and counted per worker without it."""
import logging
import time
import uuid

import pytest
from sqlalchemy import func, select

from serva import REQUEST_ID_HEADER, create_app, db
from serva.settings import SettingsError
from serva.schema import orders

from conftest import make_partner, together
from test_transport import assert_api_error, assert_json

ATTACKER, NEIGHBOUR = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "198.51.100.9"}
WRONG_KEY = "sk_" + "A" * 43
LINK = "https://example.com/post/1"


def make_app(tmp_path, name="serva.sqlite", **config):
    app = create_app({"TESTING": True, "SECRET_KEY": "t",
                      "DATABASE_URL": f"sqlite:///{tmp_path / name}", **config})
    db.init_schema(app.extensions["serva.engine"])
    return app


@pytest.fixture
def limited(tmp_path):
    app = make_app(tmp_path, RATE_LIMIT_INVALID_KEYS="5/minute", RATE_LIMIT_PER_KEY="4/minute")
    yield app
    app.extensions["serva.engine"].dispose()


def balance(client, key, environ=ATTACKER, **kwargs):
    return client.post("/api/v1", data={"action": "balance", "key": key}, environ_base=environ, **kwargs)


def assert_rate_limited(response):
    """429, the contract's body with the same n as Retry-After, JSON, the request id."""
    assert response.status_code == 429
    body = assert_json(response)
    seconds = int(response.headers["Retry-After"])
    assert body == {"error": f"Too many requests, retry after {seconds} s", "code": "rate_limited"}
    assert response.headers.get(REQUEST_ID_HEADER)
    return seconds


def test_the_defaults(app):
    assert app.config["RATE_LIMIT_PER_KEY"] == "100/second"
    assert app.config["RATE_LIMIT_INVALID_KEYS"] == "30/minute"
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"


def test_a_flood_of_wrong_keys_gets_429_while_a_neighbour_is_served(limited):
    _, key = make_partner(limited)
    client = limited.test_client()
    for _ in range(5):
        assert_api_error(balance(client, WRONG_KEY), "invalid_key")
    for wrong in (WRONG_KEY, "sk_short", "not-a-key", "sk_" + "B" * 43):
        assert 1 <= assert_rate_limited(balance(client, wrong)) <= 60
    # a right key from another address, and from the flooding one (a shared NAT): served
    assert assert_json(balance(client, key, NEIGHBOUR)) == {"balance": "100", "currency": "USD"}
    assert assert_json(balance(client, key, ATTACKER)) == {"balance": "100", "currency": "USD"}
    # the neighbour's own wrong keys have their own count
    assert_api_error(balance(client, WRONG_KEY, NEIGHBOUR), "invalid_key")


def test_revoked_keys_count_as_failed_authentications(limited):
    from serva import keys
    account_id, key = make_partner(limited)
    with limited.app_context(), db.write() as conn:
        keys.revoke_key(conn, account_id)
    client = limited.test_client()
    for _ in range(5):
        assert_api_error(balance(client, key), "key_revoked")
    assert_rate_limited(balance(client, key))


def test_requests_without_a_key_are_not_failed_authentications(limited):
    client = limited.test_client()
    for _ in range(8):
        assert_api_error(client.post("/api/v1", data={"action": "balance"}, environ_base=ATTACKER),
                         "missing_key")


def test_retry_after_is_the_rest_of_the_window(limited):
    # Real time, not freezegun: the memory storage sweeps expired counters from a timer thread,
    # which freezegun leaves on the real clock (it would see frozen windows as long over).
    client = limited.test_client()
    started = time.time()
    for _ in range(5):
        assert_api_error(balance(client, WRONG_KEY), "invalid_key")
    seconds = assert_rate_limited(balance(client, WRONG_KEY))
    assert 60 - (time.time() - started) - 1 <= seconds <= 60


def test_a_new_window_counts_from_zero(tmp_path):
    app = make_app(tmp_path, RATE_LIMIT_INVALID_KEYS="1/second")
    client = app.test_client()
    assert_api_error(balance(client, WRONG_KEY), "invalid_key")
    assert assert_rate_limited(balance(client, WRONG_KEY)) == 1
    time.sleep(1.1)
    assert_api_error(balance(client, WRONG_KEY), "invalid_key")
    app.extensions["serva.engine"].dispose()


def test_the_per_key_limit(limited):
    from serva import services
    from serva.demo import CATALOG
    with limited.app_context(), db.write() as conn:
        services.add(conn, **CATALOG[0])
    _, key = make_partner(limited)
    _, other = make_partner(limited, "other@example.com")
    client = limited.test_client()
    for _ in range(3):
        assert "balance" in assert_json(balance(client, key, NEIGHBOUR))
    assert "order" in assert_json(client.post("/api/v1", data={
        "action": "add", "key": key, "service": "1234", "link": LINK, "quantity": "100"}))
    # the fifth request of the minute, whatever the action or address: 429, nothing placed
    response = client.post("/api/v1", data={"action": "add", "key": key, "service": "1234",
                                            "link": LINK + "/2", "quantity": "100"})
    assert 1 <= assert_rate_limited(response) <= 60
    assert_rate_limited(client.get("/api/v1", headers={"X-Api-Key": key},
                                   query_string={"action": "balance"}, environ_base=ATTACKER))
    with limited.app_context(), db.read() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar() == 1
    # another key is counted apart
    assert assert_json(balance(client, other)) == {"balance": "100", "currency": "USD"}


def test_limits_are_counted_by_key_id_and_nothing_logs_the_key(limited, caplog):
    caplog.set_level(logging.DEBUG)
    _, key = make_partner(limited)
    client = limited.test_client()
    for _ in range(6):
        balance(client, key)
        balance(client, WRONG_KEY)
    limits = limited.extensions["serva.ratelimit"]
    stored = " ".join(limits.limiter.storage.counts)  # the in-process counters' keys
    from serva.keys import hash_key
    assert "key" in stored and "address" in stored
    for secret in (key, WRONG_KEY, hash_key(key), hash_key(WRONG_KEY)):
        assert secret not in stored
        assert secret not in caplog.text


def test_a_limit_left_empty_is_off(tmp_path):
    app = make_app(tmp_path, RATE_LIMIT_INVALID_KEYS="", RATE_LIMIT_PER_KEY="")
    client = app.test_client()
    _, key = make_partner(app)
    for _ in range(40):
        assert_api_error(balance(client, WRONG_KEY), "invalid_key")
    for _ in range(120):
        assert balance(client, key).status_code == 200


def test_a_malformed_limit_is_refused_at_start(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="RATE_LIMIT_PER_KEY must be a rate"):
        make_app(tmp_path, RATE_LIMIT_PER_KEY="lots")
    monkeypatch.setenv("SERVA_RATE_LIMIT_INVALID_KEYS", "30 a minute")
    with pytest.raises(SettingsError) as refused:
        make_app(tmp_path)
    assert str(refused.value) == ("SERVA_RATE_LIMIT_INVALID_KEYS must be a rate such as 30/minute, "
                                  "or empty for no limit (got '30 a minute')")


@pytest.mark.parametrize("uri", ["memory", "reddis://:hunter2@127.0.0.1:6379", "nosuch://hunter2"])
def test_a_storage_that_limits_cannot_open_is_refused_at_start(tmp_path, monkeypatch, uri):
    monkeypatch.setenv("SERVA_RATELIMIT_STORAGE_URI", uri)
    with pytest.raises(SettingsError) as refused:
        make_app(tmp_path)
    message = str(refused.value)
    assert message.startswith("SERVA_RATELIMIT_STORAGE_URI must be ") and "\n" not in message
    assert "hunter2" not in message  # a storage URI may hold a password


def test_the_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVA_RATE_LIMIT_PER_KEY", "7/hour")
    monkeypatch.setenv("SERVA_RATE_LIMIT_INVALID_KEYS", "3/minute")
    monkeypatch.setenv("SERVA_RATELIMIT_STORAGE_URI", "memory://")
    app = make_app(tmp_path)
    assert app.config["RATE_LIMIT_PER_KEY"] == "7/hour"
    client = app.test_client()
    for _ in range(3):
        assert_api_error(balance(client, WRONG_KEY), "invalid_key")
    assert_rate_limited(balance(client, WRONG_KEY))


# ---------------------------------------------------------------- shared counts (Redis)

REDIS_URI = "redis://127.0.0.1:6379"


@pytest.fixture
def redis_uri():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URI, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URI}: {error}")
    return REDIS_URI


def test_two_processes_share_the_counts_through_redis(tmp_path, redis_uri):
    """Two apps (two worker processes) on one database and one Redis: one count per key and
    per address. A fresh key prefix keeps parallel test runs apart."""
    config = dict(RATELIMIT_STORAGE_URI=redis_uri, RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}",
                  RATE_LIMIT_PER_KEY="4/minute", RATE_LIMIT_INVALID_KEYS="3/minute")
    first, second = make_app(tmp_path, **config), make_app(tmp_path, **config)
    _, key = make_partner(first)
    one, two = first.test_client(), second.test_client()
    for client in (one, two, one, two):
        assert balance(client, key).status_code == 200
    assert_rate_limited(balance(two, key))
    assert_rate_limited(balance(one, key))
    for client in (one, two, one):
        assert_api_error(balance(client, WRONG_KEY, NEIGHBOUR), "invalid_key")
    assert_rate_limited(balance(two, WRONG_KEY, NEIGHBOUR))
    for app in (first, second):
        app.extensions["serva.engine"].dispose()


def test_an_unreachable_limit_storage_does_not_stop_the_api(tmp_path, redis_uri, caplog):
    app = make_app(tmp_path, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1", RATE_LIMIT_PER_KEY="1/minute")
    _, key = make_partner(app)
    client = app.test_client()
    for _ in range(3):
        assert assert_json(balance(client, key)) == {"balance": "100", "currency": "USD"}
    assert "rate-limit storage unreachable" in caplog.text
    app.extensions["serva.engine"].dispose()


# ---------------------------------------------------------------- a real two-worker server

def _flood(url, key, requests_count, threads=16):
    """`requests_count` balance calls of one key from `threads` threads, each on a connection
    of its own (so the kernel hands them to either worker): the statuses."""
    import requests

    def call(t):
        return [requests.post(f"{url}/api/v1", data={"action": "balance", "key": key},
                              timeout=30).status_code
                for _ in range(t, requests_count, threads)]
    return [status for batch in together(threads, call) for status in batch]


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_a_key_flooding_two_gunicorn_workers(app, tmp_path, storage, request):
    """`serva serve --workers 2`, one key flooding it. With Redis the two workers share one
    count: exactly the limit gets through. With the default memory:// each worker counts on
    its own: once both have seen the key's requests, exactly twice the limit got through —
    never more, however long the flood."""
    from conftest import wait_until_serving
    from test_serve import server_url, start_server, stop_server, worker_pids

    limit = 20
    env = {"SERVA_RATE_LIMIT_PER_KEY": f"{limit}/hour", "SERVA_RATE_LIMIT_INVALID_KEYS": ""}
    if storage == "redis":
        env.update(SERVA_RATELIMIT_STORAGE_URI=request.getfixturevalue("redis_uri"),
                   SERVA_RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}")
    _, key = make_partner(app)
    _, probe = make_partner(app, "probe@example.com")  # its own count: polls until serving
    app.extensions["serva.engine"].dispose()
    log_path = tmp_path / "serve.log"
    process = start_server(app.config["DATABASE_URL"], log_path, workers=2, env=env)
    try:
        deadline = time.monotonic() + 60
        url = server_url(process, log_path, deadline)
        wait_until_serving(url, probe, deadline)
        worker_pids(process.pid, 2, deadline)
        statuses = _flood(url, key, 200)
        if storage == "memory":
            while statuses.count(200) < 2 * limit and len(statuses) < 2000:
                statuses += _flood(url, key, 200)  # until both workers have seen the key
    finally:
        stop_server(process)
    assert set(statuses) == {200, 429}, sorted(set(statuses))
    assert statuses.count(200) == (limit if storage == "redis" else 2 * limit)


def test_the_in_process_counters_expire_with_their_window_and_stay_bounded():
    """memory:// counts in a window, starts a new one once it has passed, and sweeps
    expired counts so the table does not grow with every key ever seen."""
    from freezegun import freeze_time

    from serva.ratelimit_memory import LocalStorage

    storage = LocalStorage()
    with freeze_time("2026-01-01 00:00:00") as clock:
        assert [storage.incr("a", 1) for _ in range(3)] == [1, 2, 3]
        assert storage.get("a") == 3
        clock.tick(1.5)
        assert storage.get("a") == 0 and storage.incr("a", 1) == 1
        for i in range(5000):
            storage.incr(f"k{i}", 1)
            if i % 1000 == 999:
                clock.tick(2)  # every thousand keys, the earlier ones have expired
        assert len(storage.counts) <= 2048
