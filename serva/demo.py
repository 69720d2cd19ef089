"""Demo data for a first run and for developers: idempotent, safe to run again."""
import json

from sqlalchemy import select

from . import accounts, coupons, db, ledger, providers, services
from .money import MICRO, format_amount
from .schema import services as services_table

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_BALANCE = 100 * MICRO
DEMO_COUPON = "DEMO10"
DEMO_PROVIDER = "simulated"
# Every demo order completes about fifteen seconds after the worker hands it over: slow enough
# to cancel one by hand, quick enough to follow one to its end and refill it. Plain `sim://`
# adds the partial and canceled outcomes of a real provider.
DEMO_PROVIDER_URL = "sim://?seconds=15&partial=0&canceled=0"
# The demo catalog's fulfilment by the built-in simulated provider (serva/simulated.py):
# local service id -> (the simulator's service id, its rate). Game top-ups stay manual.
DEMO_LINKS = {1234: ("1", 500_000), 1235: ("2", 9 * MICRO), 1236: ("3", 8 * MICRO)}

CATALOG = [
    {"id": 1234, "name": "Instagram Followers", "category": "Instagram", "kind": "default",
     "rate": 890_000, "min_quantity": 100, "max_quantity": 100_000, "refill_days": 30,
     "cancel": True, "dripfeed": True},
    {"id": 1235, "name": "YouTube Launch Package", "category": "YouTube", "kind": "package",
     "type": "Package", "rate": 15 * MICRO},
    {"id": 1236, "name": "Instagram Custom Comments", "category": "Instagram", "kind": "lines",
     "rate": 12 * MICRO, "min_quantity": 1, "max_quantity": 1000,
     "fields_json": json.dumps([{"name": "comments", "label": "Comments (one per line)",
                                 "required": True, "lines": True}])},
    # A top-up pack: the quantity is the service's, so an order needs only the fields (the
    # public page's JSON example, verbatim).
    {"id": 7788, "name": "Mobile Legends Diamonds Top-up", "category": "Game Top-up",
     "kind": "fields", "type": "Manual", "rate": 20 * MICRO, "fixed_quantity": 10,
     "fields_json": json.dumps([{"name": "player_id", "label": "Player ID", "required": True},
                                {"name": "server_id", "label": "Server ID", "required": True}])},
]


def seed():
    """Approved demo account topped up to the demo balance, the sample catalog, a coupon."""
    with db.write() as conn:
        account = accounts.get_by_email(conn, DEMO_EMAIL)
        if account is None:
            accounts.create(conn, DEMO_EMAIL, DEMO_PASSWORD, approved=True)
            account = accounts.get_by_email(conn, DEMO_EMAIL)
        else:  # put the demo back in working order: approved, not banned, the printed password
            accounts.set_api_access(conn, account.id, "approved")
            accounts.set_banned(conn, account.id, False)
            accounts.set_password(conn, account.id, DEMO_PASSWORD)
        if account.balance < DEMO_BALANCE:
            ledger.post(conn, account.id, DEMO_BALANCE - account.balance, "topup", "demo top-up")
        existing = set(conn.execute(select(services_table.c.id)).scalars())
        for entry in CATALOG:
            if entry["id"] not in existing:
                services.add(conn, **entry)
            else:  # back to the demo's definition (an older demo's 7788 was not a pack)
                services.update_service(conn, entry["id"], active=True,
                                        **{k: v for k, v in entry.items() if k != "id"})
        if coupons.get(conn, DEMO_COUPON) is None:
            coupons.create(conn, DEMO_COUPON, "percent", 1000)
        provider = providers.get(conn, DEMO_PROVIDER)
        provider_id = provider.id if provider else providers.add(conn, DEMO_PROVIDER,
                                                                 DEMO_PROVIDER_URL,
                                                                 "demo-simulated-key")
        for service_id, (provider_service, provider_rate) in DEMO_LINKS.items():
            services.update_service(conn, service_id, provider_id=provider_id,
                                    provider_service=provider_service, provider_rate=provider_rate)
    summary = (f"demo balance topped up to {format_amount(DEMO_BALANCE)}; catalog: "
               + ", ".join(f"{e['id']} {e['name']}" for e in CATALOG)
               + f"; coupon {DEMO_COUPON} (10% off); services "
               + ", ".join(str(i) for i in DEMO_LINKS)
               + f" fulfilled by the simulated provider ({DEMO_PROVIDER}, {DEMO_PROVIDER_URL}) "
                 f"through `serva worker`")
    return DEMO_EMAIL, DEMO_PASSWORD, summary
