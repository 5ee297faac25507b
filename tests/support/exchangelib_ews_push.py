"""exchangelib, unmodified, through its own Autodiscover: a push subscription on the Inbox whose notifications a tiny
HTTP receiver on 127.0.0.1 reads with exchangelib's own SendNotification parser; one JSON line per check.

Usage: exchangelib_ews_push.py DNS_HOST DNS_PORT EMAIL PASSWORD COLLEAGUE COLLEAGUE_PASSWORD
A subscription to a non-loopback URL is refused first. Then the receiver answers OK to the first notification that
carries events (a message the colleague sends) and Unsubscribe to it, so the server ends the subscription; every
wait is bounded (60 s).
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import http.server
import json
import queue
import sys
import threading
import time

from exchangelib import Account, Credentials, Message
from exchangelib.autodiscover import Autodiscovery
from exchangelib.services import SendNotification

WAIT_SECONDS = 60


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


class Receiver(http.server.BaseHTTPRequestHandler):
    seen: "queue.Queue[list]" = queue.Queue()
    answer = SendNotification.UNSUBSCRIBE

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        service = SendNotification(protocol=None)
        events = [[type(e).__name__, n.subscription_id] for n in service.parse(body) for e in n.events]
        self.seen.put([self.headers.get("User-Agent"), events])
        payload = service.ok_payload() if all(kind == "StatusEvent" for kind, _ in events) else (
            service.unsubscribe_payload())
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def run(account: Account, email: str, colleague: str, colleague_password: str) -> None:
    try:
        account.inbox.subscribe_to_push(callback_url="http://192.0.2.1/push")
        emit("elsewhere", error=None)
    except Exception as exc:
        emit("elsewhere", error=type(exc).__name__)
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/push"
    subscription_id, watermark = account.inbox.subscribe_to_push(callback_url=url, status_frequency=1,
                                                                  event_types=["NewMailEvent"])
    sender = Account(colleague, credentials=Credentials(colleague, colleague_password), autodiscover=True)
    Message(account=sender, subject="push me", body="New mail for a push subscription.",
            to_recipients=[email]).send()
    agent, events = Receiver.seen.get(timeout=WAIT_SECONDS)
    emit("pushed", events=events, ours=all(s == subscription_id for _, s in events), agent=agent,
         watermark=bool(watermark))
    server.shutdown()
    # The server reads the Unsubscribe answer on its own time: ask (bounded) until the subscription is gone.
    for _ in range(WAIT_SECONDS * 5):
        try:
            list(account.inbox.get_events(subscription_id, watermark))
            state = None
        except Exception as exc:
            state = type(exc).__name__
        if state != "ErrorInvalidPullSubscriptionId":
            break
        time.sleep(0.2)
    emit("after-unsubscribe", error=state)


def main() -> None:
    dns_host, dns_port, email, password, colleague, colleague_password = sys.argv[1:7]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        run(Account(email, credentials=Credentials(email, password), autodiscover=True), email, colleague,
            colleague_password)
    except Exception as exc:  # report the client's own verdict, whatever it is
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
