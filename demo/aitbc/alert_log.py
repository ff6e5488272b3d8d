"""A webhook receiver for Alertmanager (:5001, the receivers' address in
infra/monitoring/alertmanager.yml): logs each notification, one line per
alert, to stdout (the journal: journalctl -u alert-webhook). For the demo
(scripts/run --stack); point the receivers at real paging in production.
"""

import json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            note = json.loads(body)
            for a in note.get("alerts", []):
                labels = a.get("labels", {})
                print(f"{self.path.strip('/')}: {a.get('status')} {labels.get('alertname')} "
                      f"{labels.get('unit', labels.get('instance', ''))}: "
                      f"{a.get('annotations', {}).get('summary', '')}", flush=True)
        except ValueError:
            print(f"not JSON: {body[:200]!r}", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args):
        pass


HTTPServer(("127.0.0.1", 5001), Handler).serve_forever()
