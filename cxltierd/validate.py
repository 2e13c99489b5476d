"""Checks for the YAML config files (the policy file, scenario files): one line per failure, naming file and key path.

A `Checker` reads typed values out of a parsed document: getters take the mapping (or list), the key and the path of
the mapping, return the default when the key is absent (or fail when it is required), check ranges with open or
closed bounds, and read sizes and durations with cxltierd.units. Every failure is a ConfigError "FILE: key.path: what":

    policy.yaml: hotness.half_lfe: unknown key 'half_lfe' (did you mean 'half_life'?)
    scenario.yaml: processes[1].phases[1].skew: must be a number in (0, 5], got 'x'
    policy.yaml: engine: must be one of auto, simulated, move_pages, damos, numa_balancing, got 'turbo'
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import yaml

from cxltierd.errors import ConfigError, CxltierdError
from cxltierd.shown import show
from cxltierd.units import format_size, parse_seconds, parse_size

T = TypeVar("T")
N = TypeVar("N", int, float)
REQUIRED: Any = object()  # a getter's default when the key must be given
_ABSENT = object()


MAX_DOCUMENT_BYTES = 1 << 20  # a config file larger than this is refused unread
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_NODES = 100_000  # values in the document with every alias expanded (a billion-laughs file has 10**9)
MAX_INT_DIGITS = 100  # an integer written with more digits is refused before it is converted
_INT_TAG = "tag:yaml.org,2002:int"


class _Refused(Exception):
    """A document the loader refuses to build: message and the line it is about."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses nesting deeper than MAX_DEPTH while composing (before Python's own limit)."""

    def __init__(self, stream: bytes | str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_config(path: str | os.PathLike[str], what: str = "file", owned: bool = False) -> bytes:
    """The bytes of a config file: a regular file (a symlink to one is fine) of at most MAX_DOCUMENT_BYTES.

    Opened non-blocking, so a FIFO is refused at once instead of hanging the caller; a device (/dev/zero) is
    refused unread. With `owned` (a file that steers the daemon), the file must belong to root or to the user
    running cxltierd and must not be writable by others, as sshd's StrictModes requires: otherwise any local user
    could rewrite the policy the daemon (usually root) applies. Raises ConfigError naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device"
            raise ConfigError(f"{path}: not a regular file ({kind})")
        if owned:
            _check_owner(path, what, st)
        if st.st_size > MAX_DOCUMENT_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes, not a config file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_DOCUMENT_BYTES and (chunk := os.read(fd, MAX_DOCUMENT_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:  # it grew while being read
            raise ConfigError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes, not a config file")
        return b"".join(chunks)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    finally:
        os.close(fd)


def _check_owner(path: str | os.PathLike[str], what: str, st: os.stat_result) -> None:
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise ConfigError(f"{path}: {what} is owned by uid {st.st_uid}, neither root nor uid {me}: not trusted")
    if st.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{path}: {what} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}): not trusted")


def parse_yaml(data: bytes | str, source: str) -> Any:
    """The parsed document; a syntax error is a ConfigError "FILE: line N: not valid YAML: problem".

    Refused as well, each with one line: more than MAX_DOCUMENT_BYTES, nesting deeper than MAX_DEPTH, more than
    MAX_NODES values once aliases are expanded (or an alias inside itself), an integer of more than MAX_INT_DIGITS
    digits, a key given twice in one mapping, and any value the YAML constructor cannot build.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes, not a config file")
    loader: _Loader | None = None
    try:
        loader = _Loader(data)  # reads the start of the stream already: can raise ReaderError
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: {_line(mark)}not valid YAML: {problem}") from None
    except _Refused as e:
        raise ConfigError(f"{source}: {_line(e.mark)}{e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as e:  # a scalar the constructor cannot convert (a bad date)
        raise ConfigError(f"{source}: not valid YAML: {_cut(str(e))}") from None
    finally:
        if loader is not None:
            loader.dispose()


@contextlib.contextmanager
def one_line_errors(source: str) -> Iterator[None]:
    """Within the block, any exception but cxltierd's own becomes a ConfigError naming `source`: a check the
    loaders lack must still end in one line, never in a traceback or a dead daemon."""
    try:
        yield
    except CxltierdError:
        raise
    except Exception as e:
        raise ConfigError(f"{source}: cannot be used ({type(e).__name__}: {_cut(str(e))})") from None


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}: " if mark is not None else ""


def _cut(text: str, limit: int = 120) -> str:
    """First line of a text, at most `limit` characters."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_nodes(root: yaml.Node) -> None:
    """Raise _Refused when the composed document is too large once aliases are expanded, refers to itself, holds
    an over-long integer or a duplicate key. Iterative, and each node (an alias target included) is visited once."""
    size: dict[int, int] = {}  # id(node) -> values below and including it, aliases expanded
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES} values (aliases expanded)", node.start_mark)
            continue
        if key in size:
            continue
        if key in open_:
            raise _Refused("an alias refers to a value that contains it", node.start_mark)
        if isinstance(node, yaml.MappingNode):
            _check_keys(node)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
                raise _Refused(
                    f"an integer of {len(node.value)} characters (at most {MAX_INT_DIGITS})", node.start_mark
                )
            size[key] = 1
            continue
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _check_keys(node: yaml.MappingNode) -> None:
    """A key written twice in one mapping is refused (YAML would keep the last silently)."""
    seen: set[tuple[str, str]] = set()
    for k, _ in node.value:
        if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
            if (k.tag, k.value) in seen:
                raise _Refused(f"key {show(k.value)} is given twice in one mapping", k.start_mark)
            seen.add((k.tag, k.value))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def join(path: str, key: object) -> str:
    """The key path of a child: ("tiers", "fast") gives "tiers.fast", ("pin", 0) gives "pin[0]" (a list index).

    A key longer than 40 characters is cut (a path names a place, it does not quote the file)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = key if isinstance(key, str) and key.isprintable() else show(key)  # a newline in a key stays quoted
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{path}.{text}" if path else text


def _num(x: float) -> str:
    """A bound as written in a message: 4194304 -> "4194304", 1e6 -> "1000000", 1e12 -> "1e+12", 0.005 -> "0.005"."""
    return str(x) if isinstance(x, int) else f"{x:.10g}"


def _range(lo: Any, hi: Any, lo_open: bool = False, hi_open: bool = False, fmt: Callable[[Any], str] = _num) -> str:
    """ " in [0, 5]", " in (0, 5)", " >= 0", " < 5", or "" when unbounded."""
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{fmt(lo)}, {fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {fmt(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {fmt(hi)}"
    return ""


def _in_range(x: float, lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> bool:
    if lo is not None and (x < lo or (lo_open and x == lo)):
        return False
    return not (hi is not None and (x > hi or (hi_open and x == hi)))


def node_id(key: object, hi: int = 4095) -> int | None:
    """A NUMA node id written as a mapping key: an int, or a string of ASCII digits ("2"), within [0, hi]; else
    None. str.isdigit() alone would take "²" (and int() then fails on it)."""
    if isinstance(key, str):
        text = key.strip()
        key = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= hi:
        return key
    return None


MAX_REGEX = 256  # characters of a regex selector
MAX_WIDE_REPEATS = 2  # repeats of more than WIDE items ("*", "+", "{1,100}") in one regex
WIDE = 32


def regex_risk(pattern: str) -> str | None:
    """Why searching `pattern` could take exponential or steep polynomial time, or None when it cannot.

    Python's re backtracks and cannot be interrupted, and a regex selector runs against command lines that any
    user writes. Refused: a repeat inside a repeat ("(a+)+", "(a*b?)*"), an alternative inside a repeat unless
    its branches start with different characters ("(a|ab)*"), a backreference, and more than MAX_WIDE_REPEATS
    wide repeats (".*a.*b.*c": the search is a polynomial of that degree in the command line's length, which
    policy.Selector bounds to MATCH_CHARS). The pattern must compile."""
    sre: Any = getattr(re, "_parser")  # noqa: B009 (the stdlib's regex parser; no public name in 3.11)
    c: Any = getattr(re, "_constants")  # noqa: B009
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT)
    wide = 0

    def walk(items: Any, in_repeat: bool) -> str | None:
        nonlocal wide
        for op, av in items:
            found = None
            if op in repeats:
                lo, hi, sub = av
                if lo != hi:  # a fixed count ("{3}") only repeats its body, like writing it three times
                    if in_repeat:
                        return "a repeat inside a repeat (like (a+)+)"
                    if hi == c.MAXREPEAT or hi > WIDE:
                        wide += 1
                found = walk(sub, in_repeat or hi > 1)
            elif op == c.BRANCH:
                if in_repeat and not _distinct_starts(av[1], c):
                    return "alternatives inside a repeat that can start alike (like (a|ab)*)"
                found = next((r for b in av[1] if (r := walk(b, in_repeat))), None)
            elif op == c.SUBPATTERN:
                found = walk(av[3], in_repeat)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                found = walk(av[1], in_repeat)
            elif op == c.ATOMIC_GROUP:
                found = walk(av, in_repeat)
            elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
                return "a backreference"
            if found:
                return found
        return None

    why = walk(sre.parse(pattern), False)
    if why is None and wide > MAX_WIDE_REPEATS:
        why = f"more than {MAX_WIDE_REPEATS} unbounded or long repeats (like .*a.*b.*c)"
    return why


def _distinct_starts(branches: list[Any], c: Any) -> bool:
    """Every branch starts with a literal character, and no two with the same one."""
    firsts = [b[0][1] if b and b[0][0] == c.LITERAL else None for b in branches]
    return None not in firsts and len(set(firsts)) == len(firsts)


def _did_you_mean(word: object, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1) if isinstance(word, str) and len(word) <= 64 else []
    return f" (did you mean {close[0]!r}?)" if close else ""


class Checker:
    """Typed getters over a parsed YAML document that raise ConfigError naming `source` and the key path.

    Getters read `m[key]` (m a mapping, or a list with an index for key) at `path`, the path of m. A key that is
    absent gives `default`; with the default REQUIRED it fails "is required".

    `lenient` (scenario files) relaxes three things; strict (the policy file) checks values exactly as written:
    a key whose value is null counts as absent, a number may be written as a string ("1e6", which YAML 1.1 reads as
    a string), and strings are trimmed of surrounding whitespace before they are checked and returned.
    """

    def __init__(self, source: str, *, lenient: bool = False) -> None:
        self.source = source
        self.lenient = lenient

    def fail(self, path: str, message: str) -> NoReturn:
        """Raise a ConfigError naming the file, the key path and what is wrong."""
        raise ConfigError(": ".join(part for part in (self.source, path, message) if part))

    def mapping(self, value: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[Any, Any]:
        """A mapping whose keys are all in `allowed` and include `required`; null counts as empty."""
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, got {type(value).__name__} {show(value)}")
        allowed = tuple(allowed)
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                hint = _did_you_mean(key, allowed) or f" (valid keys: {', '.join(allowed)})"
                self.fail(join(path, key if isinstance(key, str) else show(key)), f"unknown key {show(key)}{hint}")
        for key in required:
            if key not in value:
                self.fail(join(path, key), "is required")
        return dict(value)

    def sequence(self, value: Any, path: str) -> list[Any]:
        """A list; null counts as empty."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, got {type(value).__name__} {show(value)}")
        return value

    def number(
        self,
        m: Any,
        key: str | int,
        path: str,
        default: T = REQUIRED,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
    ) -> float | T:
        """A finite number (as a float) within the bounds."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        x = self._as_float(value)
        if x is None or not math.isfinite(x) or not _in_range(x, lo, hi, lo_open, hi_open):
            self.fail(where, f"must be a number{_range(lo, hi, lo_open, hi_open)}, got {show(value)}")
        return x

    def integer(
        self, m: Any, key: str | int, path: str, default: T = REQUIRED, lo: int | None = None, hi: int | None = None
    ) -> int | T:
        """An integer at m[key], within the bounds (a bool is not an integer)."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, lo, hi):
            self.fail(where, f"must be an integer{_range(lo, hi)}, got {show(value)}")
        return value

    def size(
        self, m: Any, key: str | int, path: str, default: T = REQUIRED, lo: int = 0, hi: int | None = None
    ) -> int | T:
        """Bytes, from an integer or a size string ("512MiB"), within [lo, hi]."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        return self._measured(where, value, parse_size, "a size", _range(lo, hi, fmt=format_size), lo, hi)

    def seconds(
        self,
        m: Any,
        key: str | int,
        path: str,
        default: T = REQUIRED,
        lo: float = 0.0,
        hi: float | None = None,
        lo_open: bool = False,
    ) -> float | T:
        """Seconds, from a number or a duration string ("500ms"), within the bounds (hi is always closed)."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        return self._measured(
            where, value, parse_seconds, "a duration", f"{_range(lo, hi, lo_open)} s", lo, hi, lo_open
        )

    def string(self, m: Any, key: str | int, path: str, default: T = REQUIRED) -> str | T:
        """A non-empty string."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        text = self._trimmed(value)
        if not isinstance(text, str) or not text:
            self.fail(where, f"must be a non-empty string, got {show(value)}")
        return text

    def boolean(self, m: Any, key: str | int, path: str, default: T = REQUIRED) -> bool | T:
        """A boolean at m[key] (YAML true/false only)."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        if not isinstance(value, bool):
            self.fail(where, f"must be true or false, got {show(value)}")
        return value

    def choice(
        self, m: Any, key: str | int, path: str, choices: Iterable[str], default: T = REQUIRED, *, other: str = ""
    ) -> str | T:
        """One of the names in `choices`. `other` describes a form the caller accepts besides them ("{node: N}")."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        names = tuple(choices)
        text = self._trimmed(value)
        if not isinstance(text, str) or text not in names:
            listed = ", ".join(names) + (f" or {other}" if other else "")
            self.fail(where, f"must be one of {listed}, got {show(value)}{_did_you_mean(text, names)}")
        return text

    def regex(self, m: Any, key: str | int, path: str, default: T = REQUIRED) -> str | T:
        """A non-empty string of at most MAX_REGEX characters that compiles as a Python regular expression and
        cannot backtrack without bound (regex_risk)."""
        where, value = self._lookup(m, key, path)
        if value is _ABSENT:
            return self._default(where, default)
        text = self.string(m, key, path)
        if len(text) > MAX_REGEX:
            self.fail(where, f"a regular expression of at most {MAX_REGEX} characters, got {len(text)}")
        try:
            re.compile(text)
            risk = regex_risk(text)
        except (re.error, OverflowError, RecursionError) as e:  # a repeat count too large, nesting too deep
            self.fail(where, f"invalid regular expression {show(text)}: {_cut(str(e) or type(e).__name__)}")
        if risk:
            self.fail(where, f"regular expression {show(text)} could take very long on a hostile command line: {risk}")
        return text

    def _lookup(self, m: Any, key: str | int, path: str) -> tuple[str, Any]:
        """The key path of m[key] and its value, or _ABSENT."""
        if isinstance(m, list) and isinstance(key, int):
            where, value = join(path, key), m[key]
        else:
            where, value = join(path, str(key)), m.get(key, _ABSENT)
        return where, _ABSENT if value is None and self.lenient else value

    def _measured(
        self,
        where: str,
        value: Any,
        parse: Callable[[Any], N],
        what: str,
        bounds: str,
        lo: float | None,
        hi: float | None,
        lo_open: bool = False,
    ) -> N:
        """Value read by a cxltierd.units parser (its ValueError becomes the message), then range-checked."""
        try:
            x = parse(value)
        except (ValueError, TypeError) as e:
            self.fail(where, str(e))
        if not _in_range(x, lo, hi, lo_open):
            self.fail(where, f"must be {what}{bounds}, got {show(value)}")
        return x

    def _default(self, where: str, default: T) -> T:
        if default is REQUIRED:
            self.fail(where, "is required")
        return default

    def _as_float(self, value: Any) -> float | None:
        if isinstance(value, bool):
            return None
        try:
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str) and self.lenient and len(value) <= 64:
                return float(value)
        except (ValueError, OverflowError):  # not a number, or an integer too large for a float
            return None
        return None

    def _trimmed(self, value: Any) -> Any:
        return value.strip() if self.lenient and isinstance(value, str) else value
