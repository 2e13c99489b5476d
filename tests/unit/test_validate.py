"""The shared config checks: message format, paths, bounds, defaults, and strict (policy) vs lenient (scenario)."""

from __future__ import annotations

import pytest

from cxltierd.errors import ConfigError
from cxltierd.validate import REQUIRED, Checker, parse_yaml

STRICT = Checker("f.yaml")
LENIENT = Checker("f.yaml", lenient=True)


def message(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        call(*args, **kwargs)
    return str(e.value)


def test_message_names_file_and_path_and_omits_empty_parts():
    assert message(STRICT.fail, "a.b", "is wrong") == "f.yaml: a.b: is wrong"
    assert message(STRICT.fail, "", "is wrong") == "f.yaml: is wrong"
    assert message(Checker("").fail, "a.b", "is wrong") == "a.b: is wrong"


def test_paths_of_mapping_keys_list_indexes_and_numeric_keys():
    assert message(STRICT.integer, {"n": "x"}, "n", "top") == "f.yaml: top.n: must be an integer, got 'x'"
    assert message(STRICT.integer, {"n": "x"}, "n", "") == "f.yaml: n: must be an integer, got 'x'"
    assert message(STRICT.integer, [1, "x"], 1, "items") == "f.yaml: items[1]: must be an integer, got 'x'"
    assert message(STRICT.integer, {2: "x"}, 2, "nodes") == "f.yaml: nodes.2: must be an integer, got 'x'"


def test_mapping_unknown_and_required_keys():
    assert message(STRICT.mapping, {"hlaf": 1}, "m", ("half", "full")) == (
        "f.yaml: m.hlaf: unknown key 'hlaf' (did you mean 'half'?)"
    )
    assert message(STRICT.mapping, {"zzz": 1}, "m", ("half", "full")) == (
        "f.yaml: m.zzz: unknown key 'zzz' (valid keys: half, full)"
    )
    assert message(STRICT.mapping, {}, "m", ("half",), required=("half",)) == "f.yaml: m.half: is required"
    assert message(STRICT.mapping, [1, 2], "", ("a",)) == "f.yaml: must be a mapping, got list [1, 2]"
    assert STRICT.mapping(None, "m", ("a",)) == {} and LENIENT.mapping(None, "m", ("a",)) == {}
    assert STRICT.sequence(None, "s") == []
    assert message(STRICT.sequence, "x", "s") == "f.yaml: s: must be a list, got str 'x'"


@pytest.mark.parametrize(
    ("kwargs", "value", "expected"),
    [
        ({"lo": 0, "hi": 5, "lo_open": True}, 0, "must be a number in (0, 5], got 0"),
        ({"lo": 0, "hi": 5, "hi_open": True}, 5, "must be a number in [0, 5), got 5"),
        ({"lo": 0}, -1, "must be a number >= 0, got -1"),
        ({"lo": 0, "lo_open": True}, 0, "must be a number > 0, got 0"),
        ({"hi": 1}, 2, "must be a number <= 1, got 2"),
        ({"lo": 0, "hi": 1e6}, 2e6, "must be a number in [0, 1000000], got 2000000.0"),
        ({"lo": 0, "hi": 1e12}, 2e12, "must be a number in [0, 1e+12], got 2000000000000.0"),
        ({"lo": 0.0001, "hi": 10}, 0, "must be a number in [0.0001, 10], got 0"),
        ({}, float("nan"), "must be a number, got nan"),
        ({}, True, "must be a number, got True"),
    ],
)
def test_number_bounds(kwargs, value, expected):
    assert message(STRICT.number, {"x": value}, "x", "", **kwargs) == f"f.yaml: x: {expected}"


def test_number_accepts_bounds_and_returns_floats():
    assert STRICT.number({"x": 5}, "x", "", lo=0, hi=5, lo_open=True) == pytest.approx(5.0)
    assert isinstance(STRICT.number({"x": 5}, "x", "", lo=0, hi=5), float)
    assert STRICT.number({}, "x", "", 0.25) == pytest.approx(0.25)


def test_integer_size_seconds():
    assert message(STRICT.integer, {"pid": 1.5}, "pid", "p", lo=1, hi=4194304) == (
        "f.yaml: p.pid: must be an integer in [1, 4194304], got 1.5"
    )
    assert STRICT.size({"s": "2MiB"}, "s", "") == 2 << 20
    assert message(STRICT.size, {"s": "2GiB"}, "s", "", lo=4096, hi=1 << 30) == (
        "f.yaml: s: must be a size in [4KiB, 1GiB], got '2GiB'"
    )
    assert message(STRICT.size, {"s": "lots"}, "s", "").startswith("f.yaml: s: must be a size in bytes")
    assert STRICT.seconds({"t": "500ms"}, "t", "") == pytest.approx(0.5)
    assert message(STRICT.seconds, {"t": 0}, "t", "", lo=0, hi=3600, lo_open=True) == (
        "f.yaml: t: must be a duration in (0, 3600] s, got 0"
    )
    assert message(STRICT.seconds, {"t": "2d"}, "t", "").startswith("f.yaml: t: unknown time unit 'd' in '2d'")


def test_default_and_required():
    for getter in (STRICT.number, STRICT.integer, STRICT.size, STRICT.seconds, STRICT.string, STRICT.boolean):
        assert getter({}, "k", "m", None) is None
        assert message(getter, {}, "k", "m") == "f.yaml: m.k: is required"
        assert message(getter, {}, "k", "m", REQUIRED) == "f.yaml: m.k: is required"
    assert message(STRICT.choice, {}, "k", "m", ("a",)) == "f.yaml: m.k: is required"
    assert message(STRICT.regex, {}, "k", "m") == "f.yaml: m.k: is required"


def test_strict_checks_values_as_written():
    # null is a value (rejected), numbers must be YAML numbers, strings are kept as written
    assert message(STRICT.number, {"x": None}, "x", "", 1.0) == "f.yaml: x: must be a number, got None"
    assert message(STRICT.boolean, {"b": None}, "b", "", False) == "f.yaml: b: must be true or false, got None"
    assert message(STRICT.number, {"x": "1e6"}, "x", "") == "f.yaml: x: must be a number, got '1e6'"
    assert STRICT.string({"s": " a "}, "s", "") == " a "
    assert STRICT.string({"s": "  "}, "s", "") == "  "
    assert message(STRICT.choice, {"c": " a "}, "c", "", ("a",)) == "f.yaml: c: must be one of a, got ' a '"


def test_lenient_null_absent_number_strings_and_trimmed_strings():
    assert LENIENT.number({"x": None}, "x", "", 1.0) == pytest.approx(1.0)
    assert message(LENIENT.number, {"x": None}, "x", "m") == "f.yaml: m.x: is required"
    assert LENIENT.boolean({"b": None}, "b", "", True) is True
    assert LENIENT.number({"x": "1e6"}, "x", "") == pytest.approx(1e6)
    assert message(LENIENT.number, {"x": "many"}, "x", "", lo=0) == "f.yaml: x: must be a number >= 0, got 'many'"
    assert message(LENIENT.integer, {"n": "5"}, "n", "") == "f.yaml: n: must be an integer, got '5'"
    assert LENIENT.string({"s": " a "}, "s", "") == "a"
    assert message(LENIENT.string, {"s": "  "}, "s", "") == "f.yaml: s: must be a non-empty string, got '  '"
    assert LENIENT.choice({"c": " a "}, "c", "", ("a",)) == "a"


def test_boolean_choice_regex():
    assert STRICT.boolean({"b": False}, "b", "") is False
    assert message(STRICT.boolean, {"b": 1}, "b", "m") == "f.yaml: m.b: must be true or false, got 1"
    assert STRICT.choice({"c": "slow"}, "c", "", ("fast", "slow")) == "slow"
    assert message(STRICT.choice, {"c": "c"}, "c", "", ("a", "b")) == "f.yaml: c: must be one of a, b, got 'c'"
    assert message(STRICT.choice, {"c": "slw"}, "c", "", ("fast", "slow"), other="{node: N}") == (
        "f.yaml: c: must be one of fast, slow or {node: N}, got 'slw' (did you mean 'slow'?)"
    )
    assert STRICT.regex({"r": r"a\s+b"}, "r", "") == r"a\s+b"
    assert message(STRICT.regex, {"r": "(("}, "r", "m").startswith("f.yaml: m.r: invalid regular expression '((': ")
    assert message(STRICT.regex, {"r": 5}, "r", "m") == "f.yaml: m.r: must be a non-empty string, got 5"


def test_long_values_are_cut():
    msg = message(STRICT.boolean, {"b": "x" * 100}, "b", "")
    assert msg == f"f.yaml: b: must be true or false, got '{'x' * 36}..."


def test_parse_yaml():
    assert parse_yaml("a: 1", "f.yaml") == {"a": 1}
    assert parse_yaml(b"", "f.yaml") is None
    msg = message(parse_yaml, "a: 1\nb: c: d\n", "f.yaml")
    assert msg == "f.yaml: line 2: not valid YAML: mapping values are not allowed here"
