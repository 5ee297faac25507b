"""Paths into a POX Autodiscover answer, and the three edits a path allows (drop, duplicate, set), sans-IO.

A path starts below the Response element and names elements by local name, optionally filtered by a child's text or
an attribute: ``Account/Protocol[Type=EXPR]/Server`` is the Server of the EXPR block (``Type`` matches the child
element or the attribute of that name, as mapiHttp blocks carry it), ``User/DisplayName`` the display name,
``Account/Protocol[Type=WEB]/External/OWAUrl`` the external OWA URL. The fuzzer (harness/fuzz) draws such edits;
the ``autodiscover.mutate`` fault applies them to the real answer.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from lxml import etree

ACTIONS = ("drop", "duplicate", "set")
_STEP = re.compile(r"^([A-Za-z][\w.-]*)(?:\[@?([A-Za-z][\w-]*)=([^\]]*)\])?$")


class PathError(ValueError):
    """A path that is not written as NAME[/NAME[Child=TEXT]]..."""


@dataclass(frozen=True)
class PathStep:
    name: str
    key: Optional[str] = None      # the child (or attribute) that filters, e.g. "Type"
    value: Optional[str] = None    # the text it must have, e.g. "EXPR"

    def matches(self, element: etree._Element) -> bool:
        if not isinstance(element.tag, str) or etree.QName(element).localname != self.name:
            return False
        if self.key is None:
            return True
        if element.get(self.key) == self.value:
            return True
        return any(isinstance(c.tag, str) and etree.QName(c).localname == self.key
                   and (c.text or "").strip() == self.value for c in element)


def parse_path(path: str) -> Tuple[PathStep, ...]:
    steps = []
    for part in path.split("/"):
        match = _STEP.match(part.strip())
        if match is None:
            raise PathError(f"{part!r} in {path!r} is not NAME or NAME[Child=TEXT]")
        name, key, value = match.groups()
        steps.append(PathStep(name, key, value))
    return tuple(steps)


def elements_at(document: etree._Element, path: str) -> List[etree._Element]:
    """The elements ``path`` names in a POX answer (every match, in document order)."""
    found = [e for e in document if isinstance(e.tag, str) and etree.QName(e).localname == "Response"]
    for step in parse_path(path):
        found = [c for parent in found for c in parent if step.matches(c)]
    return found


def mutate(document: etree._Element, path: str, action: str, value: str = "") -> bool:
    """Apply one edit in place: ``drop`` removes every element ``path`` names, ``duplicate`` puts a copy right after
    each, ``set`` replaces each one's text (children kept). Whether anything changed."""
    if action not in ACTIONS:
        raise PathError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    targets = elements_at(document, path)
    for element in targets:
        parent = element.getparent()
        if parent is None:
            continue
        if action == "drop":
            parent.remove(element)
        elif action == "duplicate":
            twin = copy.deepcopy(element)
            twin.tail = element.tail
            element.addnext(twin)
        else:
            element.text = value
    return bool(targets)
