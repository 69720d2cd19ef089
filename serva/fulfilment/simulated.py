"""The built-in simulated provider (`--url sim://`): answers `services`, `add`, `status`
(single and batch) and `balance` in-process, the way a real panel does, for the demo and for
trying an integration locally.

It keeps no state: an order id carries its creation time and quantity, and its status is a
function of the time since: `Pending`, then `In progress` (remains falling), then final after
`SIM_SECONDS` (default 6): mostly `Completed`, a set share (by the id's hash) `Partial` or
`Canceled`. `sim://?seconds=20&partial=10&canceled=5` changes the pace and the shares (%).
Service 1 also takes drip-feed (`runs`: the id carries the total), `refill` (a refill id that
carries its own creation time, Completed after the same pace) and `cancel` (remembered in this
process, where the worker calls it: an active order then reports `Canceled`)."""
import hashlib
import secrets
import threading
import time
from urllib.parse import parse_qs, urlsplit

BALANCE = "1000"
CURRENCY = "USD"
CATALOG = [
    {"service": "1", "name": "Followers (simulated)", "category": "Simulated", "type": "Default",
     "rate": "0.5", "min": 10, "max": 100000, "refill": True, "cancel": True, "dripfeed": True},
    {"service": "2", "name": "Launch package (simulated)", "category": "Simulated",
     "type": "Package", "rate": "9", "min": 1, "max": 1, "refill": False, "cancel": False,
     "dripfeed": False},
    {"service": "3", "name": "Custom comments (simulated)", "category": "Simulated",
     "type": "Custom Comments", "rate": "8", "min": 1, "max": 1000, "refill": False,
     "cancel": False, "dripfeed": False},
    {"service": "4", "name": "Poll votes (simulated)", "category": "Simulated", "type": "Poll",
     "rate": "1.2", "min": 10, "max": 10000, "refill": False, "cancel": False, "dripfeed": False},
]
_BY_ID = {entry["service"]: entry for entry in CATALOG}
_CANCELED = {}  # order id -> when its cancel was accepted (this process)
_CANCELED_LOCK = threading.Lock()


def _options(url):
    query = parse_qs(urlsplit(url).query)

    def number(name, default):
        try:
            return max(0.0, float(query[name][0]))
        except (KeyError, ValueError, IndexError):
            return default
    return number("seconds", 6.0), number("partial", 10.0), number("canceled", 5.0)


def answer(url, key, action, params):
    if not key:
        return {"error": "Invalid API key"}
    if action == "balance":
        return {"balance": BALANCE, "currency": CURRENCY}
    if action == "services":
        return [dict(entry) for entry in CATALOG]
    if action == "add":
        return _add(params)
    if action == "refill":
        return _refill(url, params)
    if action == "refill_status":
        seconds = _options(url)[0]
        ids = [t.strip() for t in str(params.get("refills") or params.get("refill") or "").split(",")
               if t.strip()]
        return [{"refill": token, "status": _refill_status(token, seconds)} for token in ids[:100]]
    if action == "cancel":
        ids = [t.strip() for t in str(params.get("orders") or params.get("order") or "").split(",")
               if t.strip()]
        return [{"order": token, "cancel": _cancel(token, _options(url))} for token in ids[:100]]
    if action == "status":
        options = _options(url)
        if params.get("orders"):
            ids = [token.strip() for token in str(params["orders"]).split(",") if token.strip()]
            if len(ids) > 100:
                return {"error": "Too many orders in one request (max 100)"}
            return {token: _status(token, options) for token in ids}
        if not params.get("order"):
            return {"error": "Missing required parameter: order"}
        return _status(str(params["order"]), options)
    return {"error": "Incorrect request"}


def _add(params):
    entry = _BY_ID.get(str(params.get("service", "")))
    if entry is None:
        return {"error": "Incorrect service ID"}
    if entry["type"] == "Custom Comments":
        quantity = sum(1 for line in str(params.get("comments") or "").splitlines() if line.strip())
    elif entry["type"] == "Package":
        quantity = 1
    else:
        try:
            quantity = int(params.get("quantity"))
        except (TypeError, ValueError):
            return {"error": "Incorrect quantity"}
    if params.get("runs") not in (None, "", "1"):
        if not entry["dripfeed"]:
            return {"error": "Drip-feed is not available for this service"}
        try:
            quantity *= int(params["runs"])
        except ValueError:
            return {"error": "Incorrect runs"}
    if not str(params.get("link") or "").startswith(("http://", "https://")):
        return {"error": "Incorrect link"}
    if quantity < entry["min"]:
        return {"error": f"Quantity less than minimal {entry['min']}"}
    if quantity > entry["max"]:
        return {"error": f"Quantity more than maximum {entry['max']}"}
    return {"order": f"{int(time.time() * 1000)}-{quantity}-{secrets.token_hex(3)}"}


def _refill(url, params):
    status = _status(str(params.get("order") or ""), _options(url))
    if "error" in status:
        return status
    if status["status"] not in ("Completed", "Partial"):
        return {"error": "Refill is not available for this order"}
    return {"refill": f"R{int(time.time() * 1000)}-{secrets.token_hex(3)}"}


def _refill_status(token, seconds):
    try:
        elapsed = time.time() - int(token[1:].split("-")[0]) / 1000
    except ValueError:
        return {"error": "Refill not found"}
    return "Pending" if elapsed < seconds / 6 else "In progress" if elapsed < seconds else "Completed"


def _cancel(token, options):
    status = _status(token, options)
    if "error" in status:
        return status
    if status["status"] in ("Completed", "Partial", "Canceled"):
        return {"error": "Cancel is not available for this order"}
    with _CANCELED_LOCK:
        _CANCELED.setdefault(token, time.time())
    return 1


def _status(token, options):
    seconds, partial_share, canceled_share = options
    try:
        created_ms, quantity, _ = token.split("-")
        created, quantity = int(created_ms) / 1000, int(quantity)
    except ValueError:
        return {"error": "Incorrect order ID"}
    if token in _CANCELED:
        return {"charge": "0", "start_count": 100, "status": "Canceled", "remains": quantity,
                "currency": CURRENCY}
    elapsed = time.time() - created
    share = int(hashlib.sha256(token.encode()).hexdigest(), 16) % 10_000 / 100
    remains = quantity
    if elapsed < seconds / 6:
        status = "Pending"
    elif elapsed < seconds:
        status = "In progress"
        remains = quantity - int(quantity * elapsed / seconds)
    elif share < canceled_share:
        status = "Canceled"
    elif share < canceled_share + partial_share and quantity > 1:
        status, remains = "Partial", max(1, quantity // 3)
    else:
        status, remains = "Completed", 0
    return {"charge": "0", "start_count": 100, "status": status, "remains": remains,
            "currency": CURRENCY}
