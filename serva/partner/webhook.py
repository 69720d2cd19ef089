"""The partner's webhook endpoint in the dashboard: set its URL, the secret revealed once (in
the answer to the POST that made it, never stored in the session or a redirect), rotate it,
send a test event, see the last deliveries and why an endpoint was disabled, resend a failed
event, enable it again."""
from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import db
from ..webhooks import addresses, endpoints, history, outbox
from .blueprint import bp

CONFIRM_ROTATE = "yes"


def _render(secret=None, url_given=None):
    with db.read() as conn:
        endpoint = endpoints.get(conn, current_user.id)
        attempts = history.recent_attempts(conn, current_user.id)
    previous_until = None
    if endpoint is not None and endpoint.previous_secret \
            and (endpoint.previous_secret_until or 0) > db.now():
        previous_until = endpoint.previous_secret_until
    return render_template("webhook.html", endpoint=endpoint, secret=secret, attempts=attempts,
                           masked=endpoints.masked(endpoint.secret) if endpoint else None,
                           previous_until=previous_until, url_given=url_given,
                           events=outbox.EVENT_TYPES)


def _back(message, category="info"):
    flash(message, category)
    return redirect(url_for(".webhook_page"))


@bp.route("/webhook/")
@login_required
def webhook_page():
    return _render()


@bp.route("/webhook/", methods=["POST"])
@login_required
def set_webhook():
    url = request.form.get("url", "")
    try:
        with db.write() as conn:
            secret = endpoints.set_url(conn, current_user.id, url,
                                       current_app.config["WEBHOOK_ALLOW_PRIVATE"])
    except addresses.DestinationError as error:
        flash(f"That URL cannot be used: {error}.", "error")
        return _render(url_given=url[:addresses.MAX_URL_LENGTH]), 400
    if secret is None:
        flash("Webhook URL saved; the signing secret is unchanged.", "info")
        return redirect(url_for(".webhook_page"))
    return _render(secret=secret)


@bp.route("/webhook/rotate", methods=["POST"])
@login_required
def rotate_webhook_secret():
    if request.form.get("confirm") != CONFIRM_ROTATE:
        return _back("Tick the confirmation to make a new secret.", "error")
    with db.write() as conn:
        secret = endpoints.rotate_secret(conn, current_user.id)
    if secret is None:
        return _back("Set a webhook URL first.", "error")
    return _render(secret=secret)


@bp.route("/webhook/test", methods=["POST"])
@login_required
def send_test_event():
    with db.write() as conn:
        sent = outbox.test_event(conn, current_user.id)
    if not sent:
        return _back("There is no enabled webhook endpoint to send to.", "error")
    return _back("A webhook.test event is on its way; its delivery shows below within moments.")


@bp.route("/webhook/enable", methods=["POST"])
@login_required
def enable_webhook():
    with db.write() as conn:
        done = endpoints.enable(conn, current_user.id)
    return _back("Webhooks are enabled again." if done else "Set a webhook URL first.",
                 "info" if done else "error")


@bp.route("/webhook/disable", methods=["POST"])
@login_required
def disable_webhook():
    with db.write() as conn:
        done = endpoints.disable(conn, current_user.id, "disabled by you in the dashboard")
    return _back("Webhooks are disabled: no events are recorded until you enable them."
                 if done else "Set a webhook URL first.", "info" if done else "error")


@bp.route("/webhook/resend", methods=["POST"])
@login_required
def resend_event():
    msg_id = request.form.get("event", "")[:40]
    try:
        with db.write() as conn:
            history.resend(conn, msg_id, current_user.id, only_failed=True)
    except history.ResendError as error:
        return _back(f"Cannot resend: {error}.", "error")
    return _back(f"Event {msg_id} will be delivered again (same webhook-id).")
