"""A real HTTP server on loopback that records requests and answers from a script (SES API, webhook receivers)."""

import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorded:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body


class HttpFake:
    """`answers` is a deque of (status, headers, body); when empty, `default` answers."""

    def __init__(self, default=(200, {}, b"")):
        self.requests = []
        self.answers = collections.deque()
        self.default = default
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
                    answer = fake.answers.popleft() if fake.answers else fake.default
                status, headers, payload = answer(self) if callable(answer) else answer
                payload = payload.encode() if isinstance(payload, str) else payload
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = do_PUT = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
