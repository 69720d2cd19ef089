"""`serva webhook …`: a partner's webhook endpoint, set and looked after by the operator. The
signing secret is printed once, by the command that makes it (`set` of a new endpoint,
`rotate-secret`); afterwards only its first characters."""
import click
from flask import current_app
from flask.cli import AppGroup

from .. import db
from ..webhooks import addresses, endpoints, history
from .common import account_named, echo_lines, fail, require_schema, show_time, show_value

group = AppGroup("webhook", help="Partners' webhook endpoints: set, show, rotate, resend.",
                 callback=require_schema)


def _reveal(secret: str) -> None:
    click.echo(f"secret: {secret}")
    click.echo("(shown once: the partner verifies deliveries with it)")


@group.command("set")
@click.argument("email")
@click.argument("url")
def webhook_set(email, url):
    """Point EMAIL's endpoint at URL (https, public addresses) and enable it."""
    try:
        with db.write() as conn:
            row = account_named(conn, email)
            secret = endpoints.set_url(conn, row.id, url,
                                       current_app.config["WEBHOOK_ALLOW_PRIVATE"])
    except addresses.DestinationError as error:
        fail(f"{url}: {error}")
    click.echo(f"{row.email}: webhooks go to {url.strip()}")
    if secret is not None:
        _reveal(secret)
    else:
        click.echo("the secret is unchanged (rotate-secret makes a new one)")


def _endpoint(conn, email):
    row = account_named(conn, email)
    endpoint = endpoints.get(conn, row.id)
    if endpoint is None:
        fail(f"{row.email} has no webhook endpoint (set one with `serva webhook set`)")
    return row, endpoint


@group.command("show")
@click.argument("email")
def webhook_show(email):
    """EMAIL's endpoint: URL, state, secret (masked)."""
    with db.read() as conn:
        row, endpoint = _endpoint(conn, email)
    state = "enabled" if endpoint.enabled else f"disabled: {endpoint.disabled_reason}"
    click.echo(f"account\t{row.email}\nurl\t{endpoint.url}\nstate\t{state}\n"
               f"secret\t{endpoints.masked(endpoint.secret)}")
    if endpoint.previous_secret and (endpoint.previous_secret_until or 0) > db.now():
        click.echo(f"previous secret\t{endpoints.masked(endpoint.previous_secret)} "
                   f"(signs too until {show_time(endpoint.previous_secret_until)})")
    click.echo(f"failing since\t{show_time(endpoint.failing_since)}")


def _switch(email, enable: bool):
    with db.write() as conn:
        row, _ = _endpoint(conn, email)
        if enable:
            endpoints.enable(conn, row.id)
        else:
            endpoints.disable(conn, row.id, "disabled by the operator")
    click.echo(f"{row.email}: webhooks {'enabled' if enable else 'disabled'}")


@group.command("disable")
@click.argument("email")
def webhook_disable(email):
    """Stop EMAIL's deliveries (no events are recorded while disabled)."""
    _switch(email, enable=False)


@group.command("enable")
@click.argument("email")
def webhook_enable(email):
    """Deliver to EMAIL's endpoint again."""
    _switch(email, enable=True)


@group.command("rotate-secret")
@click.argument("email")
def webhook_rotate(email):
    """A new signing secret for EMAIL; the old one still signs for 24 hours."""
    with db.write() as conn:
        row, _ = _endpoint(conn, email)
        secret = endpoints.rotate_secret(conn, row.id)
    click.echo(f"{row.email}: new secret; the previous one also signs for 24 hours")
    _reveal(secret)


@group.command("deliveries")
@click.argument("email")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def webhook_deliveries(email, limit):
    """EMAIL's last delivery attempts, newest first."""
    with db.read() as conn:
        row = account_named(conn, email)
        attempts = history.recent_attempts(conn, row.id, limit)
    echo_lines(f"{show_time(a.created_at)}\t{a.msg_id}\t{a.type}\tattempt {a.attempt}\t"
               f"HTTP {show_value(a.status_code)}\t{a.duration_ms} ms\t{a.state}\t"
               f"{show_value(a.error)}" for a in attempts)


@group.command("resend")
@click.argument("event_id")
def webhook_resend(event_id):
    """Send the event EVENT_ID (its webhook-id, msg_…) again, on a fresh retry schedule."""
    try:
        with db.write() as conn:
            history.resend(conn, event_id.strip())
    except history.ResendError as error:
        fail(str(error))
    click.echo(f"{event_id.strip()}: will be delivered by the next worker pass")
