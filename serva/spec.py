"""The API's parameters, declared once: each with its aliases, when it is needed and what it
means. The handlers read their parameters through these objects, the dispatch table
(`api.ACTIONS`) lists which action takes which, and the public API page (`GET /api`) renders
both, so the page cannot say what the code does not do."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Param:
    names: tuple  # the name, then its aliases, in the order they are read
    needed: str  # when it is required, for people
    about: str  # what it is, for people

    @property
    def name(self) -> str:
        return self.names[0]

    def get(self, params):
        """The value of the first of the names that is present and not empty (None if none)."""
        for name in self.names:
            value = params.get(name)
            if value not in (None, ""):
                return value
        return None


@dataclass(frozen=True)
class Example:
    """One call of an action as the public page shows it: the parameters sent (besides `key`
    and `action`) and the response. The page's examples are one session against the demo
    data (`serva demo`), in page order; `setup` lists the operator commands (serva CLI
    arguments) that bring an order where the example needs it (say, Completed before a refill),
    which the page's test runs before the call and the page mentions in `note`."""
    params: dict
    response: object  # JSON, or a function of the page's context (a dict) returning it
    note: str = ""
    setup: tuple = ()


@dataclass(frozen=True)
class Action:
    """An entry of the dispatch table: the handler(account, params), what it reads with the
    key (`lookup(params)` -> (statement, parameters) or None), and its public description."""
    handler: object
    summary: str
    params: tuple = ()
    examples: tuple = ()
    lookup: object = None
    extra: tuple = field(default=())  # sentences for the page after the examples


# ---------------------------------------------------------------- every request

KEY = Param(("key",), "Yes, unless a header carries it",
            "The raw API key shown once when it was created. Instead of the parameter, send it "
            "in the x-api-key header or as Authorization: Bearer; several places carrying "
            "different keys are an error.")
ACTION = Param(("action",), "Yes", "What to do: one of the actions below.")

# ---------------------------------------------------------------- add

SERVICE = Param(("service",), "Yes", "The service id, as `services` lists it.")
LINK = Param(("link", "target", "target_link"), "For link services",
             "The target: an absolute http(s) URL. Services with manual fields take `fields` "
             "instead.")
QUANTITY = Param(("quantity",), "When the quantity is yours to choose",
                 "How many units, within the service's min..max. A package or a fixed-quantity "
                 "service sets it, a custom-comments service counts the lines; a quantity that "
                 "disagrees is an error.")
FIELDS = Param(("fields", "inputs", "custom_fields"), "For services with manual fields",
               'The manual fields `services` lists for the service: an object '
               '({"player_id": "123"}), a list of {"name", "value"} objects, either one '
               'JSON-encoded in a string, or PHP-style form keys (fields[player_id]=123).')
COMMENTS = Param(("comments",), "For custom-comments services",
                 "One comment per line (also accepted inside `fields`); the quantity is the "
                 "number of non-empty lines.")
COUPON = Param(("coupon", "coupon_code"), "No",
               "A coupon code; an unknown, expired or used-up coupon is an error, never ignored.")
RUNS = Param(("runs",), "No (drip-feed services only)",
             "Drip-feed: deliver `quantity` this many times (2 to 1000), charged for quantity "
             "× runs; on a service without drip-feed, runs above 1 is refused.")
INTERVAL = Param(("interval",), "With `runs`", "Drip-feed: minutes between runs (1 to 1440).")
IDEMPOTENCY_KEY = Param(("idempotency_key",), "No",
                        "Any text up to 255 characters (or the Idempotency-Key header): a "
                        "retried add with the same key answers the first response instead of "
                        "placing a second order.")

# ---------------------------------------------------------------- status, refill, cancel

ORDER = Param(("order",), "One of order / orders", "One order id, as `add` returned it "
              "(ORD-100023 and 100023 are the same order).")
ORDERS = Param(("orders",), "One of order / orders",
               "Up to 100 order ids, comma-separated; the answer names each id exactly as sent.")

# ---------------------------------------------------------------- refill_status

REFILL = Param(("refill",), "One of refill / refills", "One refill id, as `refill` returned it "
               "(REF-5001 and 5001 are the same refill).")
REFILLS = Param(("refills",), "One of refill / refills",
                "Up to 100 refill ids, comma-separated; the answer names each id exactly as sent.")
