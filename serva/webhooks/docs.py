"""The Webhooks section of the public API page (`GET /api`), generated from the code it
describes: the event types and their data (built by the outbox's own functions from example
rows), the headers, the retry schedule (delivery.RETRY_DELAYS), and receivers in Python
(the `standardwebhooks` package), PHP and JavaScript (Node) that verify a delivery. The
page's tests run each receiver as shown and send it real deliveries."""
import json
from collections import namedtuple

from . import delivery, outbox, transport

SECRET_ENV = "WEBHOOK_SECRET"  # the receiver's own environment
PORT_ENV = "PORT"
EXAMPLE_STAMP = 1_796_601_600  # 2026-12-07 00:00:00 UTC
ExampleOrder = namedtuple("ExampleOrder", "id charge refunded status start_count remains runs "
                                          "runs_done id_format")

EVENTS = (
    (outbox.ORDER_UPDATED, "An order's status, remains or start count changed (the worker's "
     "sync, the operator, a cancel). `data` is the order's `status` answer with `order`: the "
     "charge after refunds, in your account's id format."),
    (outbox.REFILL_UPDATED, "A refill's status changed (the provider's or the operator's "
     "answer). `data`: `refill`, `order`, `status`."),
    (outbox.TEST, "Sent when you press \u201cSend a test event\u201d in the dashboard."),
)

PYTHON = f'''\
import os

from flask import Flask, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

app = Flask(__name__)
webhook = Webhook(os.environ["{SECRET_ENV}"])  # whsec_… from the dashboard
seen = set()  # keep webhook-ids in your database: a delivery may come twice


@app.post("/hooks/serva")
def serva_webhook():
    try:
        event = webhook.verify(request.get_data(), dict(request.headers))
    except WebhookVerificationError:
        return "invalid signature", 400
    msg_id = request.headers["webhook-id"]
    if msg_id not in seen:
        seen.add(msg_id)
        print(msg_id, event["type"], event["data"], flush=True)
    return "", 204


if __name__ == "__main__":
    app.run(port=int(os.environ.get("{PORT_ENV}", "8000")))
'''

PHP = f'''\
<?php
// php -S 127.0.0.1:8000 serva-webhook.php
$secret = base64_decode(substr(getenv('{SECRET_ENV}'), strlen('whsec_')));
$body = file_get_contents('php://input');
$id = $_SERVER['HTTP_WEBHOOK_ID'] ?? '';
$timestamp = $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '';
$signatures = explode(' ', $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? '');
$expected = 'v1,' . base64_encode(hash_hmac('sha256', "$id.$timestamp.$body", $secret, true));
$valid = false;
foreach ($signatures as $signature) {{
    $valid = $valid || hash_equals($expected, $signature);
}}
if (!$valid || abs(time() - (int) $timestamp) > 300) {{
    http_response_code(400);
    exit('invalid signature');
}}
$event = json_decode($body, true);
// A delivery may come twice: handle each webhook-id once (keep them in your database; here a
// file per id, created only if it does not exist yet).
$seen = sys_get_temp_dir() . '/serva-webhook-' . hash('sha256', $id);
if (@fopen($seen, 'x') !== false) {{
    file_put_contents('php://stderr', "$id {{$event['type']}} " . json_encode($event['data']) . "\\n");
}}
http_response_code(204);
'''

JAVASCRIPT = f'''\
import {{ createHmac, timingSafeEqual }} from "node:crypto";
import {{ createServer }} from "node:http";

const secret = Buffer.from(process.env.{SECRET_ENV}.slice("whsec_".length), "base64");
const seen = new Set(); // keep webhook-ids in your database: a delivery may come twice

createServer((req, res) => {{
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {{
    const body = Buffer.concat(chunks);
    const id = req.headers["webhook-id"] ?? "";
    const timestamp = req.headers["webhook-timestamp"] ?? "";
    const expected = Buffer.from("v1," + createHmac("sha256", secret)
      .update(`${{id}}.${{timestamp}}.`).update(body).digest("base64"));
    const valid = (req.headers["webhook-signature"] ?? "").split(" ").some((signature) =>
      signature.length === expected.length && timingSafeEqual(Buffer.from(signature), expected));
    if (!valid || Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) {{
      res.writeHead(400).end("invalid signature");
      return;
    }}
    const event = JSON.parse(body);
    if (!seen.has(id)) {{
      seen.add(id);
      console.log(id, event.type, JSON.stringify(event.data));
    }}
    res.writeHead(204).end();
  }});
}}).listen(Number(process.env.{PORT_ENV} ?? 8000), "127.0.0.1");
'''

SNIPPETS = (("python", "Python (standardwebhooks + Flask)", PYTHON),
            ("php", "PHP", PHP), ("javascript", "JavaScript (Node 18+)", JAVASCRIPT))


def _example_data(event_type: str) -> dict:
    if event_type == outbox.ORDER_UPDATED:  # a Partial order of 1000, 250 not delivered
        return outbox.order_data(ExampleOrder(23, 890_000, 222_500, "Partial", 1200, 250, None,
                                              None, "prefixed"))
    if event_type == outbox.REFILL_UPDATED:
        return {"refill": "REF-5001", "order": "ORD-100023", "status": "Completed"}
    return {"message": "a test event from Serva"}


def _delay(seconds: int) -> str:
    if seconds == 0:
        return "at once"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def section() -> dict:
    """What the page's Webhooks section shows (the examples are the outbox's bodies)."""
    return {
        "events": [{"type": kind, "when": when, "example": json.dumps(json.loads(
                        outbox.body(kind, _example_data(kind), EXAMPLE_STAMP)), indent=2)}
                   for kind, when in EVENTS],
        "schedule": ", ".join(_delay(seconds) for seconds in delivery.RETRY_DELAYS),
        "attempts": len(delivery.RETRY_DELAYS),
        "timeout": f"{transport.TOTAL_TIMEOUT:g}",
        "max_body_kb": outbox.MAX_BODY_BYTES // 1024,
        "snippets": [{"language": language, "title": title, "code": code}
                     for language, title, code in SNIPPETS],
        "secret_env": SECRET_ENV, "port_env": PORT_ENV,
    }
