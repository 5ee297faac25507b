"""The control listener: plain HTTP on a loopback address only, through the project's HTTP edge (services/web.py),
answering with ControlApi. Its URL and bearer token go to endpoints.json (mode 0600) under "control"."""
from __future__ import annotations

import secrets
from typing import Any, Dict, Optional

from harness.control.api import ControlApi, json_response
from harness.protocols.http import HttpResponse
from harness.services.server import is_loopback
from harness.services.web import HttpFactory


class ControlSite:
    """The app interface of services/web.py around a ControlApi: nothing is recorded per request (the transcript is
    the clients' story, and the token must never reach it)."""

    def __init__(self, api: ControlApi):
        self.api = api

    def handle(self, request):
        return self.api.handle(request)

    def open_tunnel(self, request, io) -> HttpResponse:
        return json_response(405, {"error": f"{request.method} is not allowed here"})

    def too_large(self, request, size: int) -> HttpResponse:
        return json_response(413, {"error": f"the body of {size} bytes is too large"}, [("Connection", "close")])

    def bad_request(self, info, status: int, message: str) -> HttpResponse:
        return json_response(status, {"error": "malformed request"})

    def connection_made(self, info) -> None:
        pass

    def tls_handshake(self, info, ok: bool, reason: str) -> None:
        pass

    def connection_lost(self, info, reason: str) -> None:
        pass

    def response_sent(self, request, response, elapsed: float) -> None:
        pass


class ControlService:
    """Started by MockExchange.start (as its ``control``): listens, and describes itself for endpoints.json."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0, token: Optional[str] = None):
        if not is_loopback(address):   # never, whatever --allow-remote says: the API changes what everyone is served
            raise ValueError(f"the control API listens on loopback only; {address} is not a loopback address")
        self.address, self.port = address, port
        self.token = token or secrets.token_urlsafe(32)
        self.api: Optional[ControlApi] = None
        self._listening: Any = None

    def start(self, reactor, server) -> Dict[str, Any]:
        self.api = ControlApi(server, self.token, reactor)
        factory = HttpFactory(ControlSite(self.api), tls=False, clock=reactor)
        try:
            self._listening = reactor.listenTCP(self.port, factory, interface=self.address)
        except Exception as exc:   # CannotListenError: say which address and port
            self.api.close()
            raise OSError(f"cannot listen on {self.address}:{self.port} (control): {exc}") from None
        port = self._listening.getHost().port
        host = f"[{self.address}]" if ":" in self.address else self.address
        return {"url": f"http://{host}:{port}", "host": self.address, "port": port, "token": self.token}

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        if self._listening is not None:
            self._listening.stopListening()
            self._listening = None
