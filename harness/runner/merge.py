"""Merging the JSON results of several runs (the shards of a CI matrix) into one report."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple


class MergeError(ValueError):
    """Results that cannot be merged (not mockex run results, shards of different splits, a scenario twice)."""


def load(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        raise MergeError(f"{path}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != "mockex-run/1":
        raise MergeError(f"{path}: not the JSON of `mockex run --json` (format mockex-run/1)")
    return document


def merge(documents: List[Tuple[str, Dict[str, Any]]]) -> Tuple[List[Dict[str, Any]], Dict[str, Any], List[str]]:
    """(results ordered by scenario name, run metadata, warnings). Shards must come from one split (same N), each at
    most once; a missing shard or an interrupted run is a warning, and the caller fails the merge on it."""
    from harness.runner.plan import parse_shard
    results: Dict[str, Dict[str, Any]] = {}
    shards: Dict[int, str] = {}
    counts = set()
    warnings = []
    for path, document in documents:
        run = document["run"]
        if run.get("shard"):
            index, count = parse_shard(run["shard"])
            counts.add(count)
            if index in shards:
                raise MergeError(f"shard {run['shard']} is both {shards[index]} and {path}")
            shards[index] = path
        if run.get("interrupted"):
            warnings.append(f"{path}: that run was interrupted; its scenarios are incomplete")
        for result in document["scenarios"]:
            if result["name"] in results:
                raise MergeError(f"scenario {result['name']} is in more than one file (the second: {path})")
            results[result["name"]] = result
    if len(counts) > 1:
        raise MergeError(f"the files come from different splits: {', '.join(f'N={n}' for n in sorted(counts))}")
    if counts:
        count = counts.pop()
        missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in shards]
        if missing:
            warnings.append(f"shard(s) {', '.join(missing)} missing: their scenarios are not in this report")
    first = documents[0][1]["run"] if documents else {}
    run = {"client": first.get("client"), "merged": [path for path, _ in documents], "mockex": first.get("mockex"),
           "started": min((d["run"].get("started", 0) for _, d in documents), default=0),
           "seconds": round(sum(d["run"].get("seconds", 0) for _, d in documents), 3)}
    ordered = [results[name] for name in sorted(results)]
    for index, result in enumerate(ordered):
        result["index"] = index
    return ordered, run, warnings
