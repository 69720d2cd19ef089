"""`serva provider import / sync` and `serva service link` against a provider over real HTTP
(tests/faulty_provider.py): exact rates and markup, types Serva can and cannot carry, updates
without duplicates, every sync change printed, never a price below the provider's, the
partner's `services` following along, and the provider's key in no output and no log."""
import json
import logging
import re
import socket

import pytest
from sqlalchemy import func, select

from serva import accounts, db
from serva.schema import services

from conftest import make_partner
from faulty_provider import KEY
from test_cli import fails as cli_fails, ok, run as cli
from test_postgres import pg_app, pg_config  # noqa: F401 - the fixtures

CATALOG = """[
 {"service": 101, "name": "IG Followers", "category": "Instagram", "type": "Default",
  "rate": "0.89", "min": 100, "max": 10000, "refill": true, "cancel": false, "dripfeed": false},
 {"service": "102", "name": "IG Likes", "category": "Instagram", "type": "Default",
  "rate": 0.000003, "min": "10", "max": "5000", "refill": 0, "cancel": 1, "dripfeed": "1"},
 {"service": 103, "name": "YT Launch", "category": "YouTube", "type": "Package",
  "rate": 15, "min": 1, "max": 1},
 {"service": 104, "name": "IG Comments", "category": "Instagram", "type": "Custom Comments",
  "rate": 1.2e-3, "min": 5, "max": 500},
 {"service": 105, "name": "IG Mentions", "category": "Instagram", "type": "Mentions with Hashtags",
  "rate": "2", "min": 10, "max": 1000},
 {"service": 106, "name": "Bad rate", "category": "Instagram", "type": "Default",
  "rate": "-1", "min": 10, "max": 1000},
 {"service": 107, "name": "TikTok Views", "category": "TikTok", "type": "Default",
  "rate": 0.0000891, "min": 100, "max": 1000000}
]"""


def fails(runner, *args, match):
    return cli_fails(runner, *args, match=re.escape(match))


def rows(app):
    with app.app_context(), db.read() as conn:
        return {row.provider_service: row for row in
                conn.execute(select(services).where(services.c.provider_id.is_not(None)))}


def service_count(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(func.count()).select_from(services)).scalar()


def table(output):
    """Tab-separated lines -> lists, without the summary line."""
    return [line.split("\t") for line in output.splitlines()[:-1]]


@pytest.fixture
def upstream(runner, fake_provider):
    fake_provider.services = CATALOG
    ok(runner, "provider", "add", "up", "--url", fake_provider.url, "--key", KEY)
    return fake_provider


def set_catalog(fake, change):
    entries = json.loads(fake.services)
    fake.services = json.dumps(change(entries))


# ---------------------------------------------------------------- import

def test_import_prices_each_carried_type_and_skips_the_rest(app, runner, upstream):
    out = ok(runner, "provider", "import", "up", "--markup", "50")
    by_pid = {line[1]: line for line in table(out)}
    followers, likes, package, comments, views = (by_pid[p] for p in ("101", "102", "103", "104", "107"))
    assert followers[2:] == ["IG Followers", "1.335", "added"]       # 0.89 × 1.5
    assert likes[2:] == ["IG Likes", "0.000005", "added"]            # 4.5 micro -> 5, half-up
    assert package[2:] == ["YT Launch", "22.5", "added"]
    assert comments[2:] == ["IG Comments", "0.0018", "added"]        # 1.2e-3 × 1.5
    assert views[2:] == ["TikTok Views", "0.000134", "added"]        # 133.65 micro -> 134
    assert by_pid["105"][0] == "skipped" and "Mentions with Hashtags" in by_pid["105"][3]
    assert by_pid["106"][0] == "skipped" and "non-negative" in by_pid["106"][3]
    assert out.splitlines()[-1] == "provider up: 5 added, 0 updated, 0 unchanged, 2 skipped"
    assert [line[0] for line in table(out)].count("skipped") == 2

    stored = rows(app)
    assert set(stored) == {"101", "102", "103", "104", "107"}
    assert {pid: str(row.id) for pid, row in stored.items()} == {
        pid: by_pid[pid][0] for pid in stored}
    f = stored["101"]
    assert (f.kind, f.type, f.rate, f.provider_rate, f.markup_bp) == ("default", "Default", 1_335_000,
                                                                       890_000, 5000)
    assert (f.min_quantity, f.max_quantity, f.refill_days, f.cancel, f.dripfeed) == (
        100, 10_000, 30, False, False)  # refill: yes -> the default window
    assert (stored["102"].refill_days, stored["102"].cancel, stored["102"].dripfeed) == (0, True, True)
    assert (stored["102"].min_quantity, stored["102"].max_quantity) == (10, 5000)
    p = stored["103"]
    assert (p.kind, p.min_quantity, p.max_quantity, p.rate) == ("package", 1, 1, 22_500_000)
    c = stored["104"]
    assert c.kind == "lines" and json.loads(c.fields_json)[0]["name"] == "comments"
    assert stored["107"].provider_rate == 90  # 89.1 micro, kept rounded up


def test_import_filters_by_category(app, runner, upstream):
    out = ok(runner, "provider", "import", "up", "--markup", "0", "--category", "youtube",
             "--category", "TikTok")
    assert sorted(line[1] for line in table(out)) == ["103", "107"]
    assert set(rows(app)) == {"103", "107"}
    assert rows(app)["107"].rate == 90  # markup 0: never below the provider's 89.1 micro


def test_import_again_updates_and_never_duplicates(app, runner, upstream):
    first = {line[1]: line[0] for line in table(ok(runner, "provider", "import", "up", "--markup", "20"))}
    count = service_count(app)
    second = table(ok(runner, "provider", "import", "up", "--markup", "20"))
    assert {line[1]: line[0] for line in second} == first
    assert {line[4] for line in second if line[0] != "skipped"} == {"unchanged"}

    set_catalog(upstream, lambda entries: [dict(e, rate="1", max=20000) if e["service"] == 101 else e
                                           for e in entries])
    third = {line[1]: line for line in table(ok(runner, "provider", "import", "up", "--markup", "25"))}
    assert third["101"][0] == first["101"]
    assert third["101"][3:] == ["1.25", "updated: rate 1.068 -> 1.25, markup 20% -> 25%, "
                                        "max 10000 -> 20000, provider rate 0.89 -> 1"]
    assert service_count(app) == count
    assert rows(app)["101"].markup_bp == 2500

    ok(runner, "service", "disable", first["104"])
    fourth = {line[1]: line for line in table(ok(runner, "provider", "import", "up", "--markup", "25"))}
    assert fourth["104"][4] == f"unchanged (disabled here: serva service enable {first['104']})"
    assert not rows(app)["104"].active  # import does not override the operator's choice


@pytest.mark.parametrize("markup", ["-5", "1000.01", "abc", "12.345"])
def test_import_refuses_a_bad_markup(runner, upstream, markup):
    fails(runner, "provider", "import", "up", "--markup", markup, match="")
    assert upstream.status_calls == []


def test_import_from_an_unknown_provider(runner):
    fails(runner, "provider", "import", "nope", "--markup", "10", match="no provider named nope")


# ---------------------------------------------------------------- sync

def test_sync_follows_the_provider_and_prints_every_change(app, runner, upstream):
    ids = {line[1]: line[0] for line in table(ok(runner, "provider", "import", "up", "--markup", "20"))}

    def change(entries):
        out = []
        for e in entries:
            if e["service"] == 101:
                e = dict(e, rate="1.1", min=50, refill=False, cancel=True)
            if e["service"] == 103:
                continue  # gone upstream
            if e["service"] == "102":
                e = dict(e, type="Poll")  # now a type Serva cannot carry
            out.append(e)
        return out
    set_catalog(upstream, change)
    out = ok(runner, "provider", "sync", "up")
    lines = table(out)
    assert [line for line in lines if line[1] == "101"] == [
        [ids["101"], "101", "IG Followers", change_] for change_ in
        ["min 100 -> 50", "provider rate 0.89 -> 1.1", "refill days 30 -> 0", "cancel no -> yes",
         "rate 1.068 -> 1.32"]]
    assert [ids["102"], "102", "IG Likes"] == [line for line in lines if line[1] == "102"][0][:3]
    assert "deactivated: type 'Poll'" in [line for line in lines if line[1] == "102"][0][3]
    assert [line for line in lines if line[1] == "103"] == [
        [ids["103"], "103", "YT Launch", "deactivated: gone upstream"]]
    assert not [line for line in lines if line[1] in ("104", "107")]
    assert out.splitlines()[-1] == "provider up: 5 linked services, 1 changed, 2 deactivated, 2 unchanged"

    stored = rows(app)
    assert (stored["101"].rate, stored["101"].markup_bp, stored["101"].min_quantity) == (1_320_000, 2000, 50)
    assert not stored["102"].active and not stored["103"].active and stored["104"].active
    again = ok(runner, "provider", "sync", "up")
    assert again == "provider up: 5 linked services, 0 changed, 0 deactivated, 5 unchanged\n"


def test_sync_refuses_an_empty_catalog_and_changes_nothing(app, runner, upstream):
    ok(runner, "provider", "import", "up", "--markup", "20")
    before = rows(app)
    upstream.services = "[]"
    fails(runner, "provider", "sync", "up", match="the provider lists no services; nothing was changed")
    assert rows(app) == before and all(row.active for row in before.values()
                                       if row.provider_service in ("101", "102", "103", "104", "107"))


def test_sync_never_leaves_a_price_below_the_provider(app, runner, upstream):
    ok(runner, "provider", "import", "up", "--markup", "20", "--category", "TikTok")
    ok(runner, "service", "add", "--name", "Mine", "--rate", "1", "--min", "100", "--max", "1000")
    mine = service_count(app)
    ok(runner, "service", "link", mine, "--provider", "up", "--provider-service", "101")
    views = rows(app)["107"].id
    ok(runner, "service", "update", views, "--rate", "0.0002")  # by hand: the markup goes

    set_catalog(upstream, lambda entries: [
        dict(e, rate={101: "1.0000005", 107: "0.00025"}.get(e["service"], e["rate"]))
        for e in entries])
    out = ok(runner, "provider", "sync", "up")
    assert f"{mine}\t101\tMine\trate 1 -> 1.000001 (raised to the provider's rate)" in out
    assert f"{views}\t107\tTikTok Views\trate 0.0002 -> 0.00025 (raised to the provider's rate)" in out
    for row in rows(app).values():
        assert row.rate >= row.provider_rate

    set_catalog(upstream, lambda entries: [dict(e, rate="0.5") if e["service"] == 101 else e
                                           for e in entries])
    out = ok(runner, "provider", "sync", "up")
    assert f"{mine}\t101\tMine\tprovider rate 1.000001 -> 0.5" in out
    assert rows(app)["101"].rate == 1_000_001  # a hand-set rate is not lowered


def test_a_rate_below_the_provider_is_refused_by_hand_too(app, runner, upstream):
    ok(runner, "provider", "import", "up", "--markup", "20", "--category", "YouTube")
    package = rows(app)["103"].id
    fails(runner, "service", "update", package, "--rate", "14.99",
          match="below what the provider charges (15)")
    ok(runner, "service", "update", package, "--rate", "15")


def test_sync_reaches_the_partners_services_at_their_discount(app, runner, client, upstream):
    account_id, key = make_partner(app)
    with app.app_context(), db.write() as conn:
        accounts.set_discount(conn, account_id, 1000)
    ok(runner, "provider", "import", "up", "--markup", "20", "--category", "instagram")

    def listed():
        body = client.post("/api/v1", data={"action": "services", "key": key}).get_json()
        return {entry["name"]: entry for entry in body}
    before = listed()
    assert set(before) == {"IG Followers", "IG Likes", "IG Comments"}
    assert before["IG Followers"]["rate"] == "0.9612"  # 1.068 less 10 %
    assert (before["IG Followers"]["refill"], before["IG Likes"]["cancel"],
            before["IG Likes"]["dripfeed"]) == (True, True, True)
    assert before["IG Comments"]["type"] == "Custom Comments"
    assert before["IG Comments"]["fields"][0]["name"] == "comments"

    set_catalog(upstream, lambda entries: [dict(e, rate="1", max=20000) if e["service"] == 101 else e
                                           for e in entries if e["service"] != 104])
    ok(runner, "provider", "sync", "up")
    after = listed()  # the cached catalog follows the change
    assert set(after) == {"IG Followers", "IG Likes"}
    assert (after["IG Followers"]["rate"], after["IG Followers"]["max"]) == ("1.08", 20000)


# ---------------------------------------------------------------- link

def test_link_and_unlink(app, runner, upstream):
    ok(runner, "service", "add", "--name", "Followers", "--rate", "0.9", "--min", "10", "--max", "50000")
    sid = service_count(app)
    out = ok(runner, "service", "link", sid, "--provider", "up", "--provider-service", "101")
    assert out.splitlines() == [f"service {sid} linked to provider up service 101",
                                f"{sid}\t101\tFollowers\tmin 10 -> 100",
                                f"{sid}\t101\tFollowers\tmax 50000 -> 10000",
                                f"{sid}\t101\tFollowers\tprovider rate - -> 0.89",
                                f"{sid}\t101\tFollowers\trefill days 0 -> 30"]
    row = rows(app)["101"]
    assert (row.id, row.rate, row.markup_bp, row.provider_rate) == (sid, 900_000, None, 890_000)
    assert ok(runner, "service", "list").splitlines()[-1].endswith("\tprovider=up:101 at 0.89")

    # import now finds it: updates it (with the markup) instead of adding a second
    count = service_count(app)
    ok(runner, "provider", "import", "up", "--markup", "10", "--category", "instagram")
    assert service_count(app) == count + 2  # 102 and 104 only
    assert rows(app)["101"].id == sid

    assert ok(runner, "service", "link", sid, "--manual") == \
        f"service {sid} is fulfilled by hand (was provider up service 101)\n"
    assert "101" not in rows(app)
    assert "provider=" not in ok(runner, "service", "list").splitlines()[sid - 1]


def test_link_refuses_what_cannot_work(app, runner, upstream):
    ok(runner, "service", "add", "--name", "Cheap", "--rate", "0.5", "--min", "10", "--max", "100")
    cheap = service_count(app)
    ok(runner, "service", "add", "--name", "Pack", "--kind", "package", "--rate", "20")
    pack = service_count(app)
    fails(runner, "service", "link", cheap, "--provider", "up", "--provider-service", "101",
          match="below the provider's (0.89)")
    fails(runner, "service", "link", pack, "--provider", "up", "--provider-service", "101",
          match="needs kind default")
    fails(runner, "service", "link", cheap, "--provider", "up", "--provider-service", "999",
          match="lists no service 999")
    fails(runner, "service", "link", cheap, "--provider", "up", "--provider-service", "105",
          match="not one Serva can carry")
    fails(runner, "service", "link", 4242, "--provider", "up", "--provider-service", "101",
          match="no service with id 4242")
    fails(runner, "service", "link", cheap, "--provider", "up", match="--provider-service")
    fails(runner, "service", "link", cheap, "--manual", "--provider", "up", match="--manual")
    fails(runner, "service", "link", cheap, "--provider", "nope", "--provider-service", "1",
          match="no provider named nope")
    ok(runner, "service", "link", pack, "--provider", "up", "--provider-service", "103")
    fails(runner, "service", "link", cheap, "--provider", "up", "--provider-service", "103",
          match=f"linked to service {pack} already")
    assert set(rows(app)) == {"103"}


# ---------------------------------------------------------------- faults and the key

def test_a_provider_that_fails_changes_nothing(app, runner, upstream):
    ok(runner, "provider", "import", "up", "--markup", "20")
    before = rows(app)
    for services_reply, message in [('{"error": "Invalid API key"}', "Invalid API key"),
                                    ('{"services": []}', "not a list"),
                                    ('[{"service": 1', "not JSON")]:
        upstream.services = services_reply
        fails(runner, "provider", "sync", "up", match=message)
        fails(runner, "provider", "import", "up", "--markup", "5", match=message)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok(runner, "provider", "add", "down", "--url", f"http://127.0.0.1:{port}/api/v2", "--key", KEY)
    fails(runner, "provider", "import", "down", "--markup", "5", match="connection failed")
    assert rows(app) == before


def test_the_providers_key_is_in_no_output_and_no_log(app, runner, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    # a provider that echoes the key back in its catalog and its errors
    set_catalog(upstream, lambda entries: entries + [
        {"service": 900, "name": f"Echo {KEY}", "category": "Instagram", "type": KEY,
         "rate": "1", "min": 1, "max": 2}])
    outputs = []
    for args in [("provider", "import", "up", "--markup", "20"), ("provider", "sync", "up"),
                 ("service", "add", "--name", "X", "--rate", "9", "--min", "1", "--max", "9"),
                 ("service", "list"), ("provider", "list")]:
        result = cli(runner, *args)
        outputs.append(result.stdout + result.stderr)
    sid = service_count(app)
    outputs.append(cli(runner, "service", "link", sid, "--provider", "up",
                       "--provider-service", "101").stdout)
    upstream.services = json.dumps({"error": f"Invalid API key {KEY}"})
    outputs.append(cli(runner, "provider", "sync", "up").stderr)
    joined = "".join(outputs)
    assert "skipped\t900\tEcho fake…cdef" in joined and "Invalid API key fake…cdef" in joined
    logged = "".join(record.getMessage() for record in caplog.records)
    assert KEY not in joined and KEY not in logged
    assert KEY[4:-4] not in joined and KEY[4:-4] not in logged


def test_import_sync_and_link_on_postgresql(pg_app, fake_provider):
    runner = pg_app.test_cli_runner()
    fake_provider.services = CATALOG
    ok(runner, "provider", "add", "up", "--url", fake_provider.url, "--key", KEY)
    ok(runner, "service", "add", "--name", "Mine", "--rate", "1", "--min", "100", "--max", "1000")
    first = table(ok(runner, "provider", "import", "up", "--markup", "50"))
    assert [line[0] for line in first if line[0] != "skipped"] == ["2", "3", "4", "5", "6"]
    assert table(ok(runner, "provider", "import", "up", "--markup", "50")) == [
        line[:4] + (["unchanged"] if line[0] != "skipped" else []) for line in first]
    set_catalog(fake_provider, lambda entries: [dict(e, rate="2") for e in entries
                                                if e["service"] != 103])
    out = ok(runner, "provider", "sync", "up")
    assert "2\t101\tIG Followers\trate 1.335 -> 3" in out
    assert "4\t103\tYT Launch\tdeactivated: gone upstream" in out
    ok(runner, "service", "link", 1, "--manual")
    fails(runner, "service", "link", 1, "--provider", "up", "--provider-service", "101",
          match="linked to service 2 already")
    assert service_count(pg_app) == 6
