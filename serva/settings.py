"""Serva's settings: every SERVA_* environment variable, read and checked in one place.

`load()` turns the environment into one typed, frozen `Settings` when the app is made, and a
value that cannot work stops the start there with `SettingsError`: one line naming the
variable and what it must be. A typo in a unit file then shows at `systemctl start`, not as
the first partner request that needs the value. The app reads the values as `app.config`
(Flask's way), under the same names as the fields in capitals; the instance folder's
`config.py` or a test's config may set them too, and pass the same checks.
"""
import os
import re
from dataclasses import asdict, dataclass, field, fields

from limits import parse as parse_rate
from sqlalchemy.engine import make_url

from .money import MICRO, format_amount, parse_amount, parse_percent
from sqlalchemy.exc import ArgumentError


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class SettingsError(ValueError):
    """A setting that cannot work. str() is one line: the variable, what it must be, and the
    value given (left out for values that may hold a password)."""

    def __init__(self, name: str, requirement: str, value=None, show_value: bool = True):
        given = f" (got {value!r})" if show_value else ""
        super().__init__(f"{name} must be {requirement}{given}")
        self.name = name


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in TRUE + FALSE:
        raise ValueError(value)
    return text in TRUE


def _number(kind, minimum):
    def parse(value):
        if isinstance(value, bool):
            raise ValueError(value)
        number = kind(value.strip() if isinstance(value, str) else value)
        if number != number or number < minimum:  # NaN, or below the least that works
            raise ValueError(value)
        return number
    return parse


def _niceness(value) -> int:
    number = _number(int, 0)(value)
    if number > 19:
        raise ValueError(value)
    return number


def _text(value) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def _optional(parse):
    """Empty or unset is None (the default made where it is used)."""
    return lambda value: None if value is None or value == "" else parse(value)


def _database_url(value) -> str:
    try:
        make_url(_text(value))
    except ArgumentError:
        raise ValueError(value) from None
    return value


def _currency(value) -> str:
    if not re.fullmatch(r"[A-Z0-9]{1,10}", _text(value).strip()):
        raise ValueError(value)
    return value.strip()


def _synchronous(value) -> str:
    text = _text(value).strip().upper()
    if text not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(value)
    return text


def _rate(value) -> str:
    """A rate in `limits`' notation ("100/second", "30 per minute"); empty turns it off."""
    text = _text(value).strip()
    if text:
        parse_rate(text)  # ValueError when it is not one
    return text


def _storage_uri(value) -> str:
    """scheme://…: which schemes work is `limits`' to say (ratelimit.init_app)."""
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", _text(value).strip()):
        raise ValueError(value)
    return value.strip()


def _prefixed(*prefixes):
    """A gateway's secret of a known kind (sk_live_…, whsec_…): a key pasted into the wrong
    variable stops the start, rather than every payment failing later."""
    def parse(value):
        text = _text(value).strip()
        if not text.startswith(prefixes) or len(text) < 12 or any(c.isspace() for c in text):
            raise ValueError(value)
        return text
    return parse


def _amount(minimum):
    """An amount of the deployment's currency in decimal (`25`, `9.99`), as micro-units."""
    def parse(value):
        number = parse_amount(str(value).strip() if isinstance(value, (str, int)) else value)
        if number < minimum:
            raise ValueError(value)
        return number
    return parse


def _percent(value) -> int:
    """A percentage with at most two decimals (`5`, `2.5`), as basis points."""
    return parse_percent(str(value).strip() if isinstance(value, (str, int)) else value)


def setting(env: str, default, parse, requirement: str, show_value: bool = True):
    """A field read from `env`; a value not shown (`show_value=False`: it may hold a password
    or key) is left out of error messages and of the settings' repr."""
    return field(default=default, repr=show_value, metadata={"env": env, "parse": parse,
                                            "requirement": requirement, "show": show_value})


WHOLE, SECONDS = "a whole number", "a whole number of seconds"
AMOUNT = "an amount in the currency such as 10 or 9.99"


@dataclass(frozen=True)
class Settings:
    """The deployment's settings; `config()` gives them as app.config entries."""

    database_url: str | None = setting(
        "SERVA_DATABASE_URL", None, _optional(_database_url),
        "a database URL such as sqlite:////srv/serva/instance/serva.sqlite or "
        "postgresql+psycopg://user@host/serva", show_value=False)
    secret_key: str | None = setting("SERVA_SECRET_KEY", None, _optional(_text), "text",
                                     show_value=False)
    currency: str = setting("SERVA_CURRENCY", "USD", _currency,
                            "a currency code of capital letters or digits such as USD")
    integer_ids: bool = setting("SERVA_INTEGER_IDS", False, _flag, "1 or 0 (or true/false)")
    max_content_length: int = setting("SERVA_MAX_BODY_BYTES", 256 * 1024, _number(int, 1),
                                      f"{WHOLE} of bytes of at least 1")
    guard_window_seconds: int = setting("SERVA_GUARD_WINDOW_SECONDS", 300, _number(int, 0),
                                        f"{SECONDS}, 0 or more")
    idempotency_ttl_seconds: int = setting("SERVA_IDEMPOTENCY_TTL_SECONDS", 24 * 3600,
                                           _number(int, 1), f"{SECONDS}, at least 1")
    key_last_used_interval: int = setting("SERVA_KEY_LAST_USED_INTERVAL", 60, _number(int, 0),
                                          f"{SECONDS}, 0 or more")
    sqlite_synchronous: str = setting("SERVA_SQLITE_SYNCHRONOUS", "FULL", _synchronous,
                                      "OFF, NORMAL, FULL or EXTRA")
    write_wait_seconds: float = setting("SERVA_WRITE_WAIT_SECONDS", 5.0, _number(float, 0),
                                        "a number of seconds, 0 or more")
    session_cookie_secure: bool = setting("SERVA_SECURE_COOKIES", False, _flag,
                                          "1 or 0 (or true/false)")
    login_max_failures: int = setting("SERVA_LOGIN_MAX_FAILURES", 5, _number(int, 1),
                                      f"{WHOLE} of at least 1")
    login_failure_window_seconds: int = setting("SERVA_LOGIN_FAILURE_WINDOW_SECONDS", 900,
                                                _number(int, 1), f"{SECONDS}, at least 1")
    login_backoff_seconds: int = setting("SERVA_LOGIN_BACKOFF_SECONDS", 15, _number(int, 1),
                                         f"{SECONDS}, at least 1")
    login_max_failures_per_address: int = setting("SERVA_LOGIN_MAX_FAILURES_PER_ADDRESS", 20,
                                                  _number(int, 1), f"{WHOLE} of at least 1")
    trusted_proxies: int = setting("SERVA_TRUSTED_PROXIES", 0, _number(int, 0),
                                   "the number of reverse proxies in front of Serva (0 for none)")
    ratelimit_storage_uri: str = setting(
        "SERVA_RATELIMIT_STORAGE_URI", "memory://", _storage_uri,
        "a rate-limit storage URI such as memory:// or redis://127.0.0.1:6379", show_value=False)
    ratelimit_key_prefix: str = setting("SERVA_RATELIMIT_KEY_PREFIX", "serva", _text, "text")
    rate_limit_per_key: str = setting("SERVA_RATE_LIMIT_PER_KEY", "100/second", _rate,
                                      "a rate such as 100/second, or empty for no limit")
    rate_limit_invalid_keys: str = setting("SERVA_RATE_LIMIT_INVALID_KEYS", "30/minute", _rate,
                                           "a rate such as 30/minute, or empty for no limit")
    sync_interval_seconds: int = setting("SERVA_SYNC_INTERVAL_SECONDS", 60, _number(int, 0),
                                         f"{SECONDS}, 0 or more")
    dispatch_retry_seconds: int = setting("SERVA_DISPATCH_RETRY_SECONDS", 30, _number(int, 0),
                                          f"{SECONDS}, 0 or more")
    dispatch_max_attempts: int = setting("SERVA_DISPATCH_MAX_ATTEMPTS", 8, _number(int, 1),
                                         f"{WHOLE} of at least 1")
    dispatch_lease_seconds: int = setting("SERVA_DISPATCH_LEASE_SECONDS", 120, _number(int, 1),
                                          f"{SECONDS}, at least 1")
    provider_connect_timeout: float = setting("SERVA_PROVIDER_CONNECT_TIMEOUT", 5.0,
                                              _number(float, 0.001), "a number of seconds above 0")
    provider_read_timeout: float = setting("SERVA_PROVIDER_READ_TIMEOUT", 30.0,
                                           _number(float, 0.001), "a number of seconds above 0")
    console_idle_seconds: int = setting("SERVA_CONSOLE_IDLE_SECONDS", 1800, _number(int, 60),
                                        f"{SECONDS}, at least 60")
    console_low_balance: int = setting("SERVA_CONSOLE_LOW_BALANCE", 10_000_000, _amount(0),
                                       "an amount such as 10 or 2.50 (a provider balance "
                                       "below it is flagged in the console)")
    worker_concurrency: int = setting("SERVA_WORKER_CONCURRENCY", 16, _number(int, 1),
                                      f"{WHOLE} of at least 1")
    # `serva worker` runs this much below the API in CPU priority (added to its niceness; not
    # on Windows): where both share a machine, partners' requests come first and the worker's
    # deliveries and syncs take what is left (bench/README.md, make bench-webhooks).
    worker_nice: int = setting("SERVA_WORKER_NICE", 10, _niceness, f"{WHOLE} from 0 to 19")
    # Money in (serva.payments). No Stripe key: no Stripe option. No manual instructions: no
    # manual option.
    stripe_secret_key: str | None = setting(
        "SERVA_STRIPE_SECRET_KEY", None, _optional(_prefixed("sk_", "rk_")),
        "a Stripe secret or restricted key (sk_… or rk_…)", show_value=False)
    stripe_webhook_secret: str | None = setting(
        "SERVA_STRIPE_WEBHOOK_SECRET", None, _optional(_prefixed("whsec_")),
        "the Stripe webhook endpoint's signing secret (whsec_…)", show_value=False)
    manual_payments: str = setting(
        "SERVA_MANUAL_PAYMENTS", "", _text,
        "text telling partners how to pay off-line (empty: no manual payments)")
    topup_minimum: int = setting("SERVA_TOPUP_MIN", 5 * MICRO, _amount(1),
                                 f"{AMOUNT}, above 0")
    topup_maximum: int = setting("SERVA_TOPUP_MAX", 10_000 * MICRO, _amount(1),
                                 f"{AMOUNT}, above 0 and at least SERVA_TOPUP_MIN")
    deposit_bonus_bp: int = setting("SERVA_DEPOSIT_BONUS_PERCENT", 0, _percent,
                                    "a percentage from 0 to 100 with at most two decimals")
    deposit_bonus_from: int = setting("SERVA_DEPOSIT_BONUS_FROM", 0, _amount(0),
                                      f"{AMOUNT}, 0 or more")
    # Development and tests only: webhook destinations may be http and private addresses
    # (loopback, 10.x…); in production that would let a partner make Serva call its network.
    webhook_allow_private: bool = setting("SERVA_WEBHOOK_ALLOW_PRIVATE", False, _flag,
                                          "1 or 0 (or true/false)")
    webhook_concurrency: int = setting("SERVA_WEBHOOK_CONCURRENCY", 32, _number(int, 1),
                                       f"{WHOLE} of at least 1 (webhook deliveries in flight)")
    # How long a worker holds an event it is delivering; past it (the worker died) the event
    # is sent again. Longer than an attempt can take (15 s), or a slow one is sent twice.
    webhook_lease_seconds: int = setting("SERVA_WEBHOOK_LEASE_SECONDS", 60, _number(int, 1),
                                         f"{SECONDS}, at least 1")
    # How long `serva prune` keeps an event that was delivered or given up, with its attempts
    # (the partner's "last deliveries", `resend`); a pending event is kept whatever its age.
    webhook_retention_days: int = setting("SERVA_WEBHOOK_RETENTION_DAYS", 30, _number(int, 1),
                                          f"{WHOLE} of days, at least 1")

    def config(self, instance_path: str) -> dict:
        """The settings as app.config entries, each field's name in capitals; without a
        database URL, a SQLite file in the instance folder."""
        config = {name.upper(): value for name, value in asdict(self).items()}
        config["DATABASE_URL"] = (self.database_url
                                  or "sqlite:///" + os.path.join(instance_path, "serva.sqlite"))
        return config


def env_name(config_key: str) -> str:
    """The environment variable of an app.config entry (for messages about it)."""
    return next(f.metadata["env"] for f in fields(Settings) if f.name.upper() == config_key)


def load(environ=None, config=None) -> Settings:
    """The settings from `environ` (os.environ by default), where `config` (the instance's
    config.py, a test's config) may give any of them by its app.config name instead.
    SettingsError names the first value that cannot work."""
    environ = os.environ if environ is None else environ
    config = config or {}
    values = {}
    for item in fields(Settings):
        key, env = item.name.upper(), item.metadata["env"]
        if key in config:
            name, value = key, config[key]
        elif env in environ:
            name, value = env, environ[env]
        else:
            continue
        try:
            values[item.name] = item.metadata["parse"](value)
        except (TypeError, ValueError, OverflowError):
            raise SettingsError(name, item.metadata["requirement"], value,
                                item.metadata["show"]) from None
    loaded = Settings(**values)
    _check_together(loaded)
    return loaded


def _check_together(loaded: Settings) -> None:
    """Values that can only work together: a top-up range that is not empty, and Stripe with
    the secret that verifies its webhooks (without it no payment would ever be credited) in a
    currency Stripe knows (three letters)."""
    if loaded.topup_maximum < loaded.topup_minimum:
        raise SettingsError("SERVA_TOPUP_MAX", f"at least SERVA_TOPUP_MIN "
                            f"({format_amount(loaded.topup_minimum)})",
                            format_amount(loaded.topup_maximum))
    if loaded.stripe_secret_key and not loaded.stripe_webhook_secret:
        raise SettingsError("SERVA_STRIPE_WEBHOOK_SECRET", "set when SERVA_STRIPE_SECRET_KEY is "
                            "(the signing secret of the endpoint /payments/stripe/webhook)",
                            show_value=False)
    if loaded.stripe_secret_key and not re.fullmatch(r"[A-Z]{3}", loaded.currency):
        raise SettingsError("SERVA_CURRENCY", "a three-letter ISO currency code for Stripe",
                            loaded.currency)
