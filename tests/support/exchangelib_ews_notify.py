"""exchangelib, unmodified, through its own Autodiscover: notifications and impersonation. One JSON line per check.

Usage: exchangelib_ews_notify.py DNS_HOST DNS_PORT EMAIL PASSWORD SCRIPT [ARGS...]
SCRIPT "notify" COLLEAGUE COLLEAGUE_PASSWORD: a pull subscription on the Inbox and a streaming one; the colleague
sends a message; get_events and get_streaming_events (connection timeout 1 minute, up to the first notification)
report what they saw.
SCRIPT "live" COLLEAGUE COLLEAGUE_PASSWORD: a streaming subscription whose stream (connection timeout 1 minute) is read
in a thread; once exchangelib has read the stream's ConnectionStatus OK, the colleague sends a message; the thread
reports the first notification it sees.
SCRIPT "impersonate" TARGET: an Account for TARGET with access_type IMPERSONATION lists its Inbox.
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import logging
import sys
import threading

from exchangelib import IMPERSONATION, Account, Credentials, Message
from exchangelib.autodiscover import Autodiscovery


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def events_of(notifications) -> list:
    return [[type(e).__name__, getattr(getattr(e, "item_id", None), "id", None)]
            for n in notifications for e in n.events if type(e).__name__ != "StatusEvent"]


def notify(account: Account, email: str, colleague: str, colleague_password: str) -> None:
    pull_id, watermark = account.inbox.subscribe_to_pull(event_types=["NewMailEvent", "CreatedEvent"], timeout=5)
    stream_id = account.inbox.subscribe_to_streaming(event_types=["NewMailEvent"])
    quiet = list(account.inbox.get_events(pull_id, watermark))
    emit("quiet", events=events_of(quiet), watermark_moves=quiet[-1].events[-1].watermark is not None)
    sender = Account(colleague, credentials=Credentials(colleague, colleague_password), autodiscover=True)
    Message(account=sender, subject="notify me", body="New mail for a subscription.", to_recipients=[email]).send()
    newest = account.inbox.all().order_by("-datetime_received")[0]
    pulled = list(account.inbox.get_events(pull_id, watermark))
    emit("pulled", events=events_of(pulled), newest_id=newest.id, subject=newest.subject)
    streamed = list(account.inbox.get_streaming_events(stream_id, connection_timeout=1, max_notifications_returned=1))
    emit("streamed", events=events_of(streamed))
    account.inbox.unsubscribe(pull_id)
    account.inbox.unsubscribe(stream_id)
    try:
        list(account.inbox.get_events(pull_id, watermark))
        emit("after-unsubscribe", error=None)
    except Exception as exc:
        emit("after-unsubscribe", error=type(exc).__name__)


class StreamOpened(logging.Handler):
    """exchangelib logs each ConnectionStatus it parses: the first OK means the stream is open."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.opened = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Connection status is: OK":
            self.opened.set()


def live(account: Account, email: str, colleague: str, colleague_password: str) -> None:
    stream_id = account.inbox.subscribe_to_streaming(event_types=["NewMailEvent"])
    watcher = StreamOpened()
    logger = logging.getLogger("exchangelib.services.get_streaming_events")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(watcher)
    seen: dict = {}

    def read_stream() -> None:
        try:
            seen["notifications"] = list(account.inbox.get_streaming_events(
                stream_id, connection_timeout=1, max_notifications_returned=1))
        except Exception as exc:
            seen["error"] = f"{type(exc).__name__}: {exc}"
        watcher.opened.set()   # never leave the main thread waiting

    sender = Account(colleague, credentials=Credentials(colleague, colleague_password), autodiscover=True)
    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    opened = watcher.opened.wait(90) and "error" not in seen and "notifications" not in seen
    if opened:
        Message(account=sender, subject="while streaming", body="Sent while the stream is open.",
                to_recipients=[email]).send()
    reader.join(150)
    newest = account.inbox.all().order_by("-datetime_received")[0]
    emit("live", opened_before_send=opened, events=events_of(seen.get("notifications", [])), newest_id=newest.id,
         subject=newest.subject, error=seen.get("error"))
    account.inbox.unsubscribe(stream_id)


def impersonate(email: str, password: str, target: str) -> None:
    try:
        account = Account(target, credentials=Credentials(email, password), autodiscover=True,
                          access_type=IMPERSONATION)
        account.inbox.refresh()
        emit("impersonated", total=account.inbox.total_count,
             subjects=sorted(m.subject for m in account.inbox.all()))
    except Exception as exc:
        emit("impersonated", error=type(exc).__name__, text=str(exc))


def main() -> None:
    dns_host, dns_port, email, password, script = sys.argv[1:6]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        if script == "impersonate":
            impersonate(email, password, sys.argv[6])
        elif script == "live":
            live(Account(email, credentials=Credentials(email, password), autodiscover=True), email,
                 sys.argv[6], sys.argv[7])
        else:
            notify(Account(email, credentials=Credentials(email, password), autodiscover=True), email,
                   sys.argv[6], sys.argv[7])
    except Exception as exc:  # report the client's own verdict, whatever it is
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
