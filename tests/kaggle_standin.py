"""A local stand-in for the Kaggle API's submission calls, so tests run the real kaggle client offline.

With KAGGLE_API_ENVIRONMENT=TEST, kagglesdk sends every call to http://localhost:7777/api/v1/<service>/<method>
as a JSON POST. ``competition_submit`` makes three: StartSubmissionUpload (answered with a blob token and an
upload URL), a PUT of the file's bytes to that URL, and CreateSubmission (with the token and the message).
The stand-in answers them as Kaggle does, records every request, and fails any step on demand with a given
HTTP status (``standin.fail["CreateSubmission"] = 429``), answering with Kaggle's JSON error shape, or answers
it late (``standin.delay["StartSubmissionUpload"] = 3.0`` seconds) to exercise the client's timeouts.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PORT = 7777  # fixed by kagglesdk: KaggleEnv.TEST is http://localhost:7777
API = "/api/v1/"
UPLOAD = "/upload/"  # our choice: the client PUTs to whatever createUrl we return


@dataclass
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")


@dataclass
class StandIn:
    """State shared with the handler: what arrived, and which steps should fail with which status."""

    port: int = PORT
    requests: list[Request] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # blob token -> bytes received
    submissions: list[dict[str, Any]] = field(default_factory=list)  # what CreateSubmission received
    fail: dict[str, int] = field(default_factory=dict)  # step ("StartSubmissionUpload", "upload", ...) -> status
    delay: dict[str, float] = field(default_factory=dict)  # step -> seconds to wait before answering

    def reset(self) -> None:
        self.requests.clear()
        self.uploads.clear()
        self.submissions.clear()
        self.fail.clear()
        self.delay.clear()

    def answer(self, step: str, request: Request) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for one step of the API."""
        time.sleep(self.delay.get(step, 0.0))
        if step in self.fail:
            status = self.fail[step]
            return status, {"code": status, "message": f"stand-in says {status} to {step}"}
        handler = getattr(self, f"_{step}", None)
        return handler(request) if handler else (404, {"code": 404, "message": f"no such method {step}"})

    def _StartSubmissionUpload(self, request: Request) -> tuple[int, dict[str, Any]]:
        token = f"blob-{len(self.uploads) + 1}"
        self.uploads[token] = b""
        return 200, {"token": token, "createUrl": f"http://localhost:{self.port}{UPLOAD}{token}"}

    def _upload(self, request: Request) -> tuple[int, dict[str, Any]]:
        token = request.path[len(UPLOAD):]
        if token not in self.uploads:
            return 404, {"code": 404, "message": "unknown upload"}
        self.uploads[token] = request.body
        return 200, {}

    def _CreateSubmission(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = request.json()
        token = body.get("blobFileTokens", "")
        if not self.uploads.get(token):
            return 400, {"code": 400, "message": f"no uploaded file for token {token!r}"}
        ref = 1000 + len(self.submissions) + 1
        self.submissions.append({"ref": ref, "competition": body.get("competitionName"),
                                 "description": body.get("submissionDescription"), "bytes": self.uploads[token]})
        return 200, {"message": f"Successfully submitted to {body.get('competitionName')}", "ref": ref}

    def _ListSubmissions(self, request: Request) -> tuple[int, dict[str, Any]]:
        rows = [{"ref": s["ref"], "description": s["description"], "status": "COMPLETE",
                 "publicScore": "0.9123", "date": "2025-01-01T00:00:00Z"} for s in self.submissions]
        return 200, {"submissions": rows, "nextPageToken": ""}

    def _IntrospectToken(self, request: Request) -> tuple[int, dict[str, Any]]:
        return 200, {"active": True, "username": "standin-user"}


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            request = Request(self.command, self.path, dict(self.headers), self._body())
            state.requests.append(request)
            if self.path.startswith(UPLOAD) and self.command == "PUT":
                step = "upload"
            elif self.path.startswith(API):
                step = self.path.rsplit("/", 1)[-1]
            else:
                step = "unknown"
            status, body = state.answer(step, request)
            payload = json.dumps(body).encode()
            if self.wfile.closed:
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            try:
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out first (see ``delay``)
                pass

        do_POST = do_PUT = do_GET = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


def port_free(port: int = PORT) -> bool:
    """True if nothing listens on localhost:``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Server:
    """The stand-in on a background thread: ``with Server() as standin: ...``."""

    def __init__(self, port: int = PORT):
        self.state = StandIn(port=port)
        self._httpd = ThreadingHTTPServer(("localhost", port), _handler(self.state))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
