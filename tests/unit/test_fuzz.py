"""Fuzzing, bounded in time: the policy loader, the scenario loader and control-socket requests take generated
input (YAML values of every type and size, nesting, aliases, non-ASCII digits, regexes, raw bytes) and either
accept it or refuse it with one line naming the file; no other exception escapes. The loaders' own checks are
called without the safety net that turns any exception into a ConfigError, so a missing check fails here."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxltierd.emulate.scenario import parse_scenario
from cxltierd.errors import ConfigError
from cxltierd.policy.schema import Policy, build_policy, parse_policy
from cxltierd.service.control import ControlServer
from cxltierd.validate import parse_yaml

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=300,
    deadline=2000,  # ms per example: refusing a hostile value must stay quick
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

TRICKY_TEXT = [
    "²",
    "٣",
    "0",
    "007",
    "-1",
    "1e400",
    "nan",
    ".inf",
    "512MiB",
    "1us",
    "x" * 300,
    "",
    " ",
    "\x00",
    "a{4294967295}",
    "(a+)+$",
    "(",
    "cxl",
    "ddr",
    "default",
    "auto",
    "1:30",
    "2001-13-45",
    "true",
    "~",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**120), max_value=10**120),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(TRICKY_TEXT),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.integers(), st.sampled_from(TRICKY_TEXT)), inner, max_size=5
        ),
    ),
    max_leaves=25,
)


def one_line(message: str, source: str) -> None:
    assert message.startswith(f"{source}: ") and "\n" not in message and len(message) < 600, message


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a value could be replaced: keys of mappings and indexes of lists."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


POLICY = yaml.safe_load((REPO / "packaging/policy.yaml").read_text()) or {}
POLICY.setdefault("tiers", {}).update({"fast": ["hbm", 0], "overrides": {3: "cxl"}})
POLICY.setdefault("processes", {}).update(
    {"manage": [{"regex": "vllm .*serve", "cgroup": "/ai.slice"}], "pin": [{"name": "redis", "tier": "ddr"}]}
)
SCENARIO = yaml.safe_load((REPO / "cxltierd/data/scenarios/hotset-shift.yaml").read_text())


@FUZZ
@given(st.data())
def test_policy_documents(data):
    doc = POLICY
    for _ in range(data.draw(st.integers(1, 3))):
        doc = replaced(doc, data.draw(st.sampled_from(paths(doc))), data.draw(values))
    try:
        policy = build_policy(doc, "p.yaml")
    except ConfigError as e:
        one_line(str(e), "p.yaml")
    else:
        assert isinstance(policy, Policy)


@FUZZ
@given(st.data())
def test_scenario_documents(data):
    doc = SCENARIO
    for _ in range(data.draw(st.integers(1, 3))):
        doc = replaced(doc, data.draw(st.sampled_from(paths(doc))), data.draw(values))
    try:
        parse_scenario(doc, "s.yaml")
    except ConfigError as e:
        one_line(str(e), "s.yaml")


FRAGMENTS = [
    "interval: " + "9" * 400,
    "interval: 99999999999999999999999999999999999999",
    "tiers: {overrides: {'²': cxl}}",
    "tiers:\n  overrides:\n    '٣': cxl",
    "a: &a [x, x, x, x, x, x, x, x, x, x]",
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
    "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
    "e: &e [*e]",
    "processes: {manage: [{regex: 'a{4294967295}'}]}",
    "processes: {manage: [{regex: '^(a+)+$'}]}",
    "hotness: " + "{a: " * 50 + "1" + "}" * 50,
    "x: " + "[" * 60,
    "interval: 5s",
    "interval: 5s",
    "engine: damos",
    "cooldown: 2001-13-45",
    "dry_run: !!binary 'not base64!'",
    "tags: !!python/object:os.system 'true'",
    "? [a, b]\n: c",
    'k: "\\uD800"',
    "\t- tab",
    "%YAML 1.1\n---",
]


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=6), st.text(max_size=30))
def test_policy_text(fragments, noise):
    text = "\n".join(fragments) + "\n" + noise
    started = time.monotonic()
    try:
        build_policy(parse_yaml(text.encode("utf-8", "surrogatepass"), "p.yaml"), "p.yaml")
    except ConfigError as e:
        one_line(str(e), "p.yaml")
    assert time.monotonic() - started < 2
    try:
        parse_policy(text.encode("utf-8", "surrogatepass"), "p.yaml")  # with the safety net: the same
    except ConfigError as e:
        one_line(str(e), "p.yaml")


requests = st.one_of(
    st.binary(max_size=300),
    values.map(lambda v: json.dumps(v, default=str).encode() + b"\n"),
    st.fixed_dictionaries(
        {"command": st.one_of(st.sampled_from(["status", "reload", "stop"]), values)}, optional={"extra": values}
    ).map(lambda v: json.dumps(v, default=str).encode() + b"\n"),
    st.sampled_from([b"[" * 70000, b'{"command": ' + b"9" * 5000 + b"}\n", b"\xff\xfe\n", b"\n", b""]),
)


@FUZZ
@given(requests)
def test_control_requests(raw):
    server = ControlServer("/nonexistent", {"status": lambda request, peer: {"ok": True}})
    server.handlers["reload"] = lambda request, peer: {"ok": True}
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        theirs.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # a full buffer: the server reads what is there
            theirs.sendall(raw[:200_000])
        theirs.shutdown(socket.SHUT_WR)
        reply = server._handle(ours, time.monotonic() + 0.5)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
    if not reply["ok"]:
        assert isinstance(reply["error"], str) and "\n" not in reply["error"] and len(reply["error"]) < 400
        assert not reply["error"].startswith("internal error")
    json.dumps(reply)
