"""`mockex fuzz`: Hypothesis draws what the server answers, the client runs against it, oracles judge, failures
shrink to a minimal misbehaviour and are saved as scenarios (docs/fuzzing.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    from harness.fuzz.engine import ClientCallable

__all__ = ["fuzz_client", "fuzz", "replay", "FuzzOptions", "FuzzReport", "Finding", "Served"]
_ENGINE_NAMES = {"fuzz", "replay", "FuzzOptions", "FuzzReport", "Finding", "Served"}


def __getattr__(name: str) -> Any:
    """The engine (and Hypothesis with it) loads on first use: `mockex serve` builds the same parser and must not
    pay for it."""
    if name in _ENGINE_NAMES:
        from harness.fuzz import engine
        return getattr(engine, name)
    raise AttributeError(name)


def fuzz_client(client: Union[str, "ClientCallable", None] = None, **options: Any) -> Any:
    """Fuzz ``client`` (a command with the runner's placeholders, or a callable taking a ``Served``) and return the
    FuzzReport. Without ``client`` it is a decorator: the decorated function becomes a test (no arguments) that
    fuzzes it and fails listing the findings.

    Options are FuzzOptions' fields: layers, max_examples, seed, timeout, save_failures, database, expected_errors,
    predicate, ..."""
    from harness.fuzz.engine import FuzzOptions, fuzz

    if "layers" in options:
        options["layers"] = tuple(options["layers"])
    if client is not None:
        return fuzz(client, FuzzOptions(**options))

    def decorate(function: "ClientCallable") -> Callable[[], None]:
        def test() -> None:
            report = fuzz(function, FuzzOptions(**options))
            assert not report.findings, "mockex fuzz findings:\n" + "\n".join(f.describe() for f in report.findings)
        test.__name__ = getattr(function, "__name__", "fuzzed_client")
        test.__doc__ = function.__doc__
        return test
    return decorate


