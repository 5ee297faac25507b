"""YAML loading that remembers line numbers, so every validation error can name file, line and field.

Fixtures and scenario files both go through here. Values come back as plain dict/list/scalars; mappings and
sequences are subclasses that carry the 1-based line of the node and of each key/item.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional

import yaml


class SpecError(ValueError):
    """A problem in a user-written file: rendered as ``file:line: field: message (hint)``."""

    def __init__(self, path: str, line: Optional[int], field: str, message: str, hint: str = ""):
        self.path, self.line, self.field, self.message, self.hint = path, line, field, message, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class SpecErrors(SpecError):
    """Every problem found in one file, so a user fixes them in one round; printed one per line."""

    def __init__(self, errors: "list[SpecError]"):
        self.errors = sorted(errors, key=lambda error: error.line or 0)
        first = errors[0]
        super().__init__(first.path, first.line, first.field, first.message, first.hint)

    def __str__(self) -> str:
        return "\n".join(SpecError.__str__(error) for error in self.errors)


class Collector:
    """Runs independent checks, keeping every SpecError; ``done()`` raises them all together."""

    def __init__(self) -> None:
        self.errors: "list[SpecError]" = []

    def check(self, fn: Any, *args: Any, default: Any = None) -> Any:
        try:
            return fn(*args)
        except SpecErrors as many:
            self.errors.extend(many.errors)
        except SpecError as error:
            self.errors.append(error)
        return default

    def done(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise SpecErrors(self.errors)


KIND_NAMES = {dict: "a mapping", list: "a list", str: "text", int: "an integer", float: "a number",
              bool: "true or false", type(None): "nothing"}


def kind_name(kind: type) -> str:
    """How a YAML user calls a type (never a Python class name such as YList or NoneType)."""
    return next((name for base, name in KIND_NAMES.items() if issubclass(kind, base) and
                 not (base is int and issubclass(kind, bool))), kind.__name__)


def describe_value(value: Any) -> str:
    if value is None:
        return "nothing (the value is empty)"
    if isinstance(value, (dict, list)):
        return kind_name(type(value))
    text = repr(value)
    return f"{kind_name(type(value))} {text if len(text) <= 60 else text[:57] + '...'}"


class YMap(dict):
    line: int = 0
    key_lines: dict

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YList(list):
    line: int = 0
    item_lines: list

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    pass


# libyaml parses some ten times faster (it is most of the time `mockex serve` takes to load an org); the pure-Python
# parser, the fallback, words some syntax errors more precisely (it names the undefined alias, the bad character).
_FAST_LOADER: Optional[type] = type("_FastLoader", (yaml.CSafeLoader,), {}) if hasattr(yaml, "CSafeLoader") else None


def _construct(loader: Any, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result = YMap()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = _construct(loader, key_node)
            if isinstance(key, (dict, list)):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                        key_node.start_mark)
            result[key] = _construct(loader, value_node)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        result = YList(_construct(loader, item) for item in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [item.start_mark.line + 1 for item in node.value]
        return result
    return loader.construct_object(node, deep=True)


def load_text(text: str, path: str) -> Any:
    """Parse YAML text; syntax errors become SpecError with the parser's line."""
    if _FAST_LOADER is not None:
        loader = _FAST_LOADER(text)
        try:
            node = loader.get_single_node()
            return None if node is None else _construct(loader, node)
        except yaml.YAMLError:
            pass   # the pure-Python parser says what is wrong, in its words
        finally:
            loader.dispose()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _construct(loader, node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(path, line, "", f"YAML syntax error: {exc.problem or exc.context}") from None
    finally:
        loader.dispose()


def load_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SpecError(str(path), None, "", f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(str(path), None, "", "file is not UTF-8 text") from None
    return load_text(text, str(path))


def closest(name: str, choices: Iterable[str]) -> str:
    """A 'did you mean' hint, or the allowed values when nothing is close."""
    choices = sorted(choices)
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if match:
        return f"did you mean {match[0]!r}?"
    return "allowed: " + ", ".join(choices)


class Reader:
    """Typed access to one YAML mapping with errors that point at the right line."""

    def __init__(self, mapping: Any, path: str, field: str = "", line: int = 0):
        if not isinstance(mapping, dict):
            raise SpecError(path, getattr(mapping, "line", line) or line, field or "(top level)",
                            f"expected a mapping, got {describe_value(mapping)}")
        self.mapping, self.path, self.prefix = mapping, path, field

    def _field(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def line(self, key: Optional[str] = None) -> int:
        if key is not None and isinstance(self.mapping, YMap):
            return self.mapping.line_of(key)
        return getattr(self.mapping, "line", 0)

    def error(self, key: str, message: str, hint: str = "") -> SpecError:
        return SpecError(self.path, self.line(key), self._field(key), message, hint)

    def only(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.mapping:
            if key not in allowed:
                raise self.error(str(key), "unknown field", closest(str(key), allowed))

    def get(self, key: str, kind: type, default: Any = ..., choices: Optional[Iterable] = None) -> Any:
        if key not in self.mapping:
            if default is ...:
                raise SpecError(self.path, self.line(), self._field(key), "required field is missing")
            return default
        value = self.mapping[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(kind_name(k) for k in kinds)
            raise self.error(key, f"expected {names}, got {describe_value(value)}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not allowed", closest(str(value), map(str, choices)))
        return value

    def sub(self, key: str, default: Any = ...) -> "Reader":
        value = self.get(key, dict, default)
        return Reader(value, self.path, self._field(key), self.line(key))

    def items(self, key: str, default: Any = ...) -> list:
        """A list field as (item, field-name, line) triples."""
        value = self.get(key, list, default)
        lines = getattr(value, "item_lines", [])
        return [(item, f"{self._field(key)}[{i}]", lines[i] if i < len(lines) else self.line(key))
                for i, item in enumerate(value)]
