"""The fault catalogue. Each layer's faults live in their own module and register themselves on import."""
import importlib

FAMILIES = ("tls", "network", "auth", "autodiscover", "dns", "rpc", "mailbox", "ews", "mapihttp")


def load_families() -> None:
    for family in FAMILIES:
        try:
            importlib.import_module(f"harness.faults.{family}")
        except ModuleNotFoundError as exc:  # a family not written yet; every other import error is a bug
            if exc.name != f"harness.faults.{family}":
                raise
