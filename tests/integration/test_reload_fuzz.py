"""Reload fuzz against a running daemon: generated policies (hostile fragments and random values in the shipped
policy) are reloaded over the control socket; each is applied or refused in one line, and the daemon keeps
ticking with the last good policy."""

from __future__ import annotations

import atexit

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxltierd.service.control import request
from tests.integration.daemon import Daemon
from tests.unit.test_fuzz import FRAGMENTS, POLICY, paths, replaced, values

GOOD = "interval: 300ms\nrate_limit: {mb_per_s: 2048}\n"


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_reload_fuzz_keeps_the_daemon_ticking_with_the_last_good_policy(tmp_path_factory, data):
    run = _daemon(tmp_path_factory)
    d, path = run["daemon"], run["path"]
    if data.draw(st.booleans()):
        text = "\n".join(data.draw(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=5))) + "\n"
    else:
        doc = replaced(POLICY, data.draw(st.sampled_from(paths(POLICY))), data.draw(values))
        text = yaml.safe_dump(doc, allow_unicode=True)
    before = request(d.control, "status", timeout=10)["status"]
    path.write_text(text)
    reply = request(d.control, "reload", timeout=30)
    assert d.proc.poll() is None, d.output()
    after = request(d.control, "status", timeout=10)["status"]
    if reply["ok"]:
        assert after["policy"]["sha256"] == reply["digest"]
    else:
        assert reply["error"].startswith(str(path)) and "\n" not in reply["error"], reply
        assert after["policy"]["sha256"] == before["policy"]["sha256"]
        path.write_text(GOOD)  # the next example starts from a good policy again
    d.wait_for(lambda: request(d.control, "status", timeout=10)["status"]["ticks"] > after["ticks"], 30, "a tick")


_RUNS: dict[str, dict] = {}


def _daemon(factory) -> dict:
    """One daemon for all the examples (started on first use, stopped at exit)."""
    if "run" not in _RUNS:
        tmp = factory.mktemp("reload-fuzz")
        path = tmp / "policy.yaml"
        path.write_text(GOOD)
        d = Daemon(tmp, "--config", str(path), "--listen", "off")
        d.wait_message("READY=1")
        atexit.register(d.stop)
        _RUNS["run"] = {"daemon": d, "path": path}
    return _RUNS["run"]
