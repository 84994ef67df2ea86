"""A small web app for Slipway, standard library only.

Listens on 0.0.0.0:$PORT (default 8080).
  GET /         an HTML page with the message from $GREETING
  GET /healthz  200 "ok" (Slipway's health check)
Exits cleanly (status 0) on SIGTERM or SIGINT, finishing requests in flight.
"""

import html
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_GREETING = "Hello from Python on Slipway"
STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    server_version = "slipway-python-example/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus
    # delayed ACKs stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", self._page().encode())
        elif path == "/info":
            body = json.dumps(
                {
                    "greeting": greeting(),
                    "hostname": socket.gethostname(),
                    "uptime_seconds": round(time.time() - STARTED, 1),
                    "version": os.environ.get("APP_VERSION", "dev"),
                }
            )
            self._send(200, "application/json", body.encode() + b"\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self):
        self.do_GET()

    def _page(self):
        return (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Slipway Python example</title></head>\n<body>\n"
            f"<h1>{html.escape(greeting())}</h1>\n"
            f"<p>Served by <code>{html.escape(socket.gethostname())}</code> "
            f"with Python {sys.version.split()[0]}.</p>\n"
            "</body></html>\n"
        )

    def _send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        # One line per request on stdout, which Slipway collects as the app's log.
        print(f"{self.address_string()} {fmt % args}", flush=True)


def greeting():
    return os.environ.get("GREETING") or DEFAULT_GREETING


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        print(f"received {signal.Signals(signum).name}, shutting down", flush=True)
        # shutdown() waits for serve_forever() to return: call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on 0.0.0.0:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
