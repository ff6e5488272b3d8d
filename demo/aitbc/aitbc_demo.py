"""Shared parts of the demo AITBC services: configuration from the
environment, an HTTP server with /v1/health and /metrics, request metrics,
and the two failure modes the monitoring plan must catch (a crash, which
systemd sees, and a hang, which only a health probe sees).

Each service (blockchain_node.py, coordinator_api.py, marketplace.py) imports
this module and adds its own routes and background work.
"""

import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest


def env_float(name, default):
    """A number from the environment (the unit's Environment= lines)."""
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"{name}={value!r}: not a number")


# The plan names request rate, error rate and response time panels but no
# metric for them: every service exports these two (see README).
http_requests = Counter(
    "http_requests_total", "HTTP requests answered", ["method", "path", "code"]
)
http_request_duration = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "path"],
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
)
# The plan's internal uptime metrics, as each service would export them
# (unitwatch measures the same from systemd, which survives the process).
service_uptime = Gauge("service_uptime_seconds", "Service uptime in seconds")
service_restart_count = Counter("service_restart_count", "Number of service restarts")
hung = Gauge("demo_hung", "1 while the demo service simulates a hang")

_started = time.monotonic()
service_uptime.set_function(lambda: time.monotonic() - _started)


class Hang:
    """A simulated hang: while it lasts, every request blocks (the process
    lives, systemd says active) and background work stops. SIGUSR1 starts one
    (for AITBC_HANG_SECONDS, 0 = until SIGUSR2), SIGUSR2 ends it;
    AITBC_HANG_EVERY > 0 starts one at random, on average that often."""

    def __init__(self):
        self.seconds = env_float("AITBC_HANG_SECONDS", 60)
        self.every = env_float("AITBC_HANG_EVERY", 0)
        self._clear = threading.Event()
        self._clear.set()
        self._lock = threading.Lock()
        signal.signal(signal.SIGUSR1, lambda *_: self.start())
        signal.signal(signal.SIGUSR2, lambda *_: self.stop())
        if self.every > 0:
            threading.Thread(target=self._random, daemon=True).start()

    def start(self):
        with self._lock:
            self._clear.clear()
            hung.set(1)
            print("hang: started", file=sys.stderr, flush=True)
            if self.seconds > 0:
                threading.Timer(self.seconds, self.stop).start()

    def stop(self):
        with self._lock:
            if not self._clear.is_set():
                print("hang: over", file=sys.stderr, flush=True)
            hung.set(0)
            self._clear.set()

    def wait(self):
        """Blocks while hung."""
        self._clear.wait()

    def _random(self):
        while True:
            time.sleep(random.expovariate(1 / self.every))
            self.start()
            self._clear.wait()


def crash_now_and_then(name):
    """AITBC_CRASH_EVERY > 0: exit 1 at random, on average that often (the
    marketplace's failure mode; systemd restarts it)."""
    every = env_float("AITBC_CRASH_EVERY", 0)
    if every <= 0:
        return

    def crash():
        time.sleep(random.expovariate(1 / every))
        print(f"{name}: simulated crash", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=crash, daemon=True).start()


def serve(name, port, routes=None, hang=None):
    """Serves /v1/health, /metrics and `routes` ({(method, path): fn(body) ->
    (code, json)}) on 127.0.0.1:port until SIGTERM."""
    routes = dict(routes or {})
    routes[("GET", "/v1/health")] = lambda _body: (200, {"status": "ok", "service": name})
    for method, path in list(routes) + [("GET", "/metrics")]:
        for code in ("200", "500"):
            # Zero series from the start, so error-rate queries have data.
            http_requests.labels(method, path, code)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, method):
            if hang is not None:
                hang.wait()
            path = self.path.split("?", 1)[0]
            start = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if method == "GET" and path == "/metrics":
                code, payload, ctype = 200, generate_latest(), CONTENT_TYPE_LATEST
            elif (method, path) in routes:
                try:
                    code, obj = routes[(method, path)](body)
                except Exception as e:  # a demo answers 500, as a real service would
                    code, obj = 500, {"error": str(e)}
                payload, ctype = json.dumps(obj).encode(), "application/json"
            else:
                code, payload, ctype = 404, b'{"error": "not found"}', "application/json"
                path = "other"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            http_requests.labels(method, path, str(code)).inc()
            http_request_duration.labels(method, path).observe(time.perf_counter() - start)

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def log_message(self, *_args):
            pass  # the request metrics say it; the journal stays readable

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"{name}: serving on http://127.0.0.1:{port}/ (/v1/health, /metrics)", file=sys.stderr, flush=True)
    server.serve_forever()
