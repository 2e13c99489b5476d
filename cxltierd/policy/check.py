"""`policy check`: every problem of a policy file in one run, each naming the file, the line and the key path.

The daemon's loader (schema.parse_policy) stops at the first problem. Here the same rules run with a Checker that
notes a failure and carries on with the key's default: a bad value, an unknown key, a mapping or list of the wrong
type each add one problem. A rule over several keys (damon.max_regions >= min_regions) still stops its own section,
so each top-level section, and each key below it, is also checked on its own. Problems come out in file order:

    policy.yaml: line 3: hotness.half_lfe: unknown key 'half_lfe' (did you mean 'half_life'?)
    policy.yaml: line 7: engine: must be one of auto, simulated, move_pages, damos, numa_balancing, got 'turbo'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml

from cxltierd.errors import ConfigError
from cxltierd.policy.schema import build_policy, parse_policy
from cxltierd.shown import show
from cxltierd.validate import REQUIRED, Checker, join, parse_yaml

T = TypeVar("T")


class _Noted(ConfigError):
    """A problem the collecting checker has already noted (raised only to leave the rule that found it)."""


class CollectingChecker(Checker):
    """A strict Checker that notes every failure as (key path, message) and returns the key's default instead."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.problems: list[tuple[str, str]] = []
        self._depth = 0  # getters running (fail raises within one)

    def fail(self, path: str, message: str) -> Any:
        """Note the problem. Within a getter, leave it (the getter returns its default); a rule over several keys
        that calls fail itself carries on, so the items after it are checked too."""
        self.problems.append((path, message))
        if self._depth:
            raise _Noted(message)

    def mapping(self, value: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[Any, Any]:
        """The mapping's allowed keys; each unknown or missing key is noted, a non-mapping noted and read as {}."""
        allowed = tuple(allowed)
        if value is not None and not isinstance(value, Mapping):
            return self._or(lambda: super(CollectingChecker, self).mapping(value, path, allowed), {})
        value = dict(value or {})
        for key in list(value):
            if self._or(lambda k=key: super(CollectingChecker, self).mapping({k: None}, path, allowed), None) is None:
                del value[key]
        for key in required:
            if key not in value:
                self.fail(join(path, key), "is required")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        """A list; anything else is noted and read as []."""
        return self._or(lambda: super(CollectingChecker, self).sequence(value, path), [])

    def number(self, m: Any, key: str | int, path: str, default: Any = REQUIRED, *args: Any, **kw: Any) -> Any:
        """Checker.number, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).number(m, key, path, default, *args, **kw), default)

    def integer(self, m: Any, key: str | int, path: str, default: Any = REQUIRED, *args: Any, **kw: Any) -> Any:
        """Checker.integer, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).integer(m, key, path, default, *args, **kw), default)

    def size(self, m: Any, key: str | int, path: str, default: Any = REQUIRED, *args: Any, **kw: Any) -> Any:
        """Checker.size, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).size(m, key, path, default, *args, **kw), default)

    def seconds(self, m: Any, key: str | int, path: str, default: Any = REQUIRED, *args: Any, **kw: Any) -> Any:
        """Checker.seconds, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).seconds(m, key, path, default, *args, **kw), default)

    def string(self, m: Any, key: str | int, path: str, default: Any = REQUIRED) -> Any:
        """Checker.string, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).string(m, key, path, default), default)

    def boolean(self, m: Any, key: str | int, path: str, default: Any = REQUIRED) -> Any:
        """Checker.boolean, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).boolean(m, key, path, default), default)

    def choice(
        self, m: Any, key: str | int, path: str, choices: Iterable[str], default: Any = REQUIRED, *, other: str = ""
    ) -> Any:
        """Checker.choice, or the default when it fails."""
        names = tuple(choices)
        return self._or(
            lambda: super(CollectingChecker, self).choice(m, key, path, names, default, other=other), default
        )

    def regex(self, m: Any, key: str | int, path: str, default: Any = REQUIRED) -> Any:
        """Checker.regex, or the default when it fails."""
        return self._or(lambda: super(CollectingChecker, self).regex(m, key, path, default), default)

    def _or(self, get: Any, default: T) -> Any:
        self._depth += 1
        try:
            return get()
        except _Noted:
            return None if default is REQUIRED else default
        finally:
            self._depth -= 1


def check_policy(data: bytes, source: str) -> list[str]:
    """Every problem of a policy file's bytes, one line each ("FILE: line N: key.path: what"); [] when it is valid.

    A file the YAML parser refuses has that one problem. The result is empty exactly when parse_policy accepts it."""
    try:
        doc = parse_yaml(data, source)
    except ConfigError as e:
        return [str(e)]
    c = CollectingChecker(source)
    for part in _parts(doc):
        try:
            build_policy(part, source, checker=c)
        except _Noted:
            pass  # noted; the rest of this part's section is checked by a smaller part
        except Exception as e:  # a value a rule did not expect after an earlier problem's default stood in
            if not c.problems:
                c.problems.append(("", f"cannot be used ({type(e).__name__})"))
    if not c.problems:
        try:
            parse_policy(data, source)
        except ConfigError as e:
            return [str(e)]
        return []
    lines = key_lines(data)
    first: dict[str, str] = {}
    for path, message in c.problems:  # one problem per key: the first (a default standing in can fail again)
        first.setdefault(path, message)
    order = sorted(((_line_of(p, lines), p, m) for p, m in first.items()), key=lambda x: x[0] or 0)
    return [": ".join(x for x in (source, f"line {n}" if n else "", path, msg) if x) for n, path, msg in order]


def _parts(doc: Any) -> list[Any]:
    """The whole document, then each top-level key alone, then each key of a top-level mapping alone."""
    parts = [doc]
    if isinstance(doc, Mapping):
        for key, value in doc.items():
            parts.append({key: value})
            if isinstance(value, Mapping) and len(value) > 1:
                parts.extend({key: {k: v}} for k, v in value.items())
    return parts


def key_lines(data: bytes) -> dict[str, int]:
    """Key path ("processes.pin[0].tier") -> the 1-based line where that key or list item is written."""
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    stack: list[tuple[str, yaml.Node]] = [("", root)] if root is not None else []
    while stack:
        path, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    child = join(path, k.value if k.tag.endswith(":str") else show(_scalar(k)))
                    lines.setdefault(child, k.start_mark.line + 1)
                    stack.append((child, v))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                child = join(path, i)
                lines.setdefault(child, v.start_mark.line + 1)
                stack.append((child, v))
    return lines


def _scalar(node: yaml.ScalarNode) -> Any:
    """A non-string key's value as YAML reads it (2 for `2:`), for naming it as the checker does."""
    try:
        return yaml.safe_load(node.value)
    except yaml.YAMLError:
        return node.value


def _line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of the key path, else of its nearest enclosing key that is written in the file."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None
