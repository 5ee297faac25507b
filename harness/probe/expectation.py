"""The probe against a running mock: its options from the mock's endpoints.json, and a scenario's `expect.analyzer`
judged against the verdict. One implementation for `mockex probe --endpoints`, `mockex run --client probe` and the
test suite's "every scenario's expect checked by the probe".

No verdict may depend on wall-clock headroom: a short step timeout is used only where a timeout is the expected
verdict (a slow machine only makes it come sooner); elsewhere steps get a long one.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from harness.probe.report import Verdict
from harness.probe.runner import ProbeOptions
from harness.verdicts import TIMEOUT_REASONS

DEFAULT_USER = "alice@contoso.test"
SHORT_STEP_TIMEOUT = 2.0    # where the expected verdict is a timeout
LONG_STEP_TIMEOUT = 15.0    # elsewhere: far above any answer the mock delays on purpose (network-latency: 1.2 s)


def endpoint_user(endpoints: Dict[str, Any], who: Optional[str] = None) -> Dict[str, Any]:
    """The user of endpoints.json named by e-mail address, logon name or UPN (default: the first user)."""
    users = endpoints["users"]
    if who is None:
        return users[0]
    wanted = who.lower()
    for user in users:
        if wanted in (user["email"].lower(), user["username"].lower(), user["upn"].lower()):
            return user
    raise KeyError(f"{who} is not a user of {endpoints['domain']} (users: "
                   f"{', '.join(u['email'] for u in users)})")


def options_from_endpoints(endpoints: Dict[str, Any], who: Optional[str] = None, **overrides: Any) -> ProbeOptions:
    """Options pointing the probe at a running mock: its DNS, CA, the user's password, and its ports standing in
    for 443/80. ``overrides`` replace any ProbeOptions field."""
    user = endpoint_user(endpoints, who)
    settings: Dict[str, Any] = dict(email=user["email"], password=user["password"],
                                    dns=(endpoints["dns"]["host"], endpoints["dns"]["port"]),
                                    ca_file=endpoints["ca_file"], https_port=endpoints["https"]["port"],
                                    http_port=endpoints["http"]["port"])
    settings.update(overrides)
    return ProbeOptions(**settings)


def step_timeout_for(expect: Dict[str, Any]) -> float:
    return SHORT_STEP_TIMEOUT if expect.get("reason") in TIMEOUT_REASONS else LONG_STEP_TIMEOUT


def options_for_expectation(endpoints: Dict[str, Any], expect: Dict[str, Any], total_timeout: float = 600.0,
                            seed: int = 1) -> ProbeOptions:
    """The probe run that judges a scenario's ``expect.analyzer``: as its ``user`` (default alice), step timeout
    by ``step_timeout_for``; ``total_timeout`` is only a runaway bound."""
    return options_from_endpoints(endpoints, expect.get("user", DEFAULT_USER), step_timeout=step_timeout_for(expect),
                                  total_timeout=total_timeout, seed=seed)


def describe_expectation(expect: Dict[str, Any]) -> str:
    if expect.get("passes"):
        return "passes"
    text = f"fails at {expect.get('fails_at')}"
    details = [expect[key] for key in ("reason",) if key in expect]
    details += [f"host {expect['host']}"] if "host" in expect else []
    return text + (f" ({', '.join(details)})" if details else "")


def describe_verdict(verdict: Verdict) -> str:
    if verdict.passed:
        return "passes"
    host = f", host {verdict.host}" if verdict.host else ""
    return f"fails at {verdict.fails_at} ({verdict.reason}{host})"


def mismatches(expect: Dict[str, Any], verdict: Verdict) -> List[str]:
    """How the verdict departs from ``expect.analyzer`` (empty: it concludes what the scenario says)."""
    got = describe_verdict(verdict) + (f": {verdict.message}" if verdict.message else "")
    if expect.get("passes"):
        return [] if verdict.passed else [f"the probe should pass; it {got}"]
    wrong = []
    if verdict.fails_at != expect["fails_at"]:
        wrong.append("step")
    if "reason" in expect and verdict.reason != expect["reason"]:
        wrong.append("reason")
    if "host" in expect and verdict.host != expect["host"]:
        wrong.append("host")
    if not wrong:
        return []
    return [f"the probe should conclude '{describe_expectation(expect)}'; it {got} (wrong {', '.join(wrong)})"]
