"""The bare stack: Flask with one route returning a constant JSON body, nothing else.

`make bench` serves it with exactly the same server and settings as Serva (waitress, same
threads, same host) so each action's req/s can be reported as a ratio to it."""
from flask import Flask, Response

app = Flask(__name__)
BODY = b'{"balance":"25.5","currency":"USD"}'


@app.route("/api/v1", methods=["GET", "POST"], strict_slashes=False)
def endpoint():
    return Response(BODY, mimetype="application/json")
