"""The Kubernetes manifests: a DaemonSet that can do the job with the least privilege Kubernetes can express."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "packaging" / "kubernetes" / "daemonset.yaml"
CONTAINERFILE = REPO / "packaging" / "kubernetes" / "Containerfile"
POLICY = REPO / "packaging" / "policy.yaml"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    loaded = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    by_kind = {d["kind"]: d for d in loaded}
    assert len(by_kind) == len(loaded), "one object per kind expected"
    return by_kind


@pytest.fixture(scope="module")
def pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = docs["DaemonSet"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] if c["name"] == "cxltierd"]
    return c


def test_objects_and_namespace(docs: dict[str, dict[str, Any]]) -> None:
    assert set(docs) == {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"}
    ns = docs["Namespace"]["metadata"]["name"]
    for kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
        assert docs[kind]["metadata"]["namespace"] == ns, kind
    # hostPID/hostPath/capabilities are only admitted at the privileged Pod Security level.
    assert docs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    ds = docs["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]


def test_host_namespaces(pod: dict[str, Any]) -> None:
    assert pod["hostPID"] is True, "move_pages on host processes needs the host PID namespace"
    assert pod["hostNetwork"] is True, "udev netlink events are only multicast in the host network namespace"
    assert pod.get("hostIPC") is not True


def test_least_privilege(container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["SYS_ADMIN", "SYS_NICE", "SYS_PTRACE"]
    assert sc["readOnlyRootFilesystem"] is True
    # The API server rejects allowPrivilegeEscalation=false together with SYS_ADMIN.
    assert sc.get("allowPrivilegeEscalation", True) is True
    # The runtimes' default seccomp profile has no move_pages/migrate_pages.
    assert sc["seccompProfile"]["type"] in {"Unconfined", "Localhost"}


def test_image_command_and_port(container: dict[str, Any]) -> None:
    assert container["image"] == "ghcr.io/cxltierd/cxltierd:0.1.0"
    argv = container.get("command", []) + container.get("args", [])
    assert argv[:2] == ["cxltierd", "run"]
    assert "--backend=host" in argv  # never the emulated host on a production node
    assert "--listen=0.0.0.0:9750" in argv
    assert "--config=/etc/cxltierd/policy.yaml" in argv
    assert {"containerPort": 9750, "protocol": "TCP", "name": "metrics"} in container["ports"]


def test_probes_on_healthz(container: dict[str, Any]) -> None:
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert get["port"] in (9750, "metrics"), probe


def test_prometheus_annotations(docs: dict[str, dict[str, Any]]) -> None:
    ann = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "9750"
    assert ann["prometheus.io/path"] == "/metrics"


def test_resources_and_tolerations(pod: dict[str, Any], container: dict[str, Any]) -> None:
    res = container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    assert pod["tolerations"], "a node agent must tolerate tainted nodes"
    assert pod["terminationGracePeriodSeconds"] > 5


def test_mounts(pod: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # /sys read-write: DAMON, memory block state, demotion_enabled.
    sys_mount = mounts["/sys"]
    assert not sys_mount.get("readOnly", False)
    assert volumes[sys_mount["name"]]["hostPath"]["path"] == "/sys"
    # libudev's monitor needs /run/udev/control.
    assert volumes[mounts["/run/udev"]["name"]]["hostPath"]["path"] == "/run/udev"
    # The policy comes from the ConfigMap, at the daemon's default path.
    policy = mounts["/etc/cxltierd"]
    assert policy["readOnly"] is True
    assert volumes[policy["name"]]["configMap"]["name"] == "cxltierd-policy"
    # The control socket's directory is writable despite the read-only root filesystem.
    assert "/run/cxltierd" in mounts
    # Nothing under /proc: runtimes refuse such mounts; hostPID gives the host's processes in /proc.
    assert not [p for p in mounts if p == "/proc" or p.startswith("/proc/")]


def test_configmap_policy_uses_known_keys(docs: dict[str, dict[str, Any]]) -> None:
    policy = yaml.safe_load(docs["ConfigMap"]["data"]["policy.yaml"])
    assert isinstance(policy, dict) and policy
    reference = yaml.safe_load(POLICY.read_text())
    unknown = set(policy) - set(reference)
    assert not unknown, f"keys not in packaging/policy.yaml: {unknown}"
    for key, value in policy.items():
        if isinstance(value, dict) and isinstance(reference[key], dict):
            assert set(value) <= set(reference[key]), key


def test_node_labels_reach_node_feature_discovery(
    docs: dict[str, dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    from cxltierd.policy.schema import parse_policy

    feature_file = parse_policy(docs["ConfigMap"]["data"]["policy.yaml"], "configmap").node_labels.feature_file
    assert feature_file == "/etc/kubernetes/node-feature-discovery/features.d/cxltierd"
    directory = feature_file.rsplit("/", 1)[0]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    assert not mount.get("readOnly", False)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == directory  # where NFD's worker reads feature files on the node


def test_configmap_policy_is_accepted_by_the_daemon(docs: dict[str, dict[str, Any]]) -> None:
    from cxltierd.policy.schema import parse_policy

    policy = parse_policy(docs["ConfigMap"]["data"]["policy.yaml"], "configmap")
    assert policy.engine == "auto"
    assert policy.dry_run is False


def test_containerfile() -> None:
    text = CONTAINERFILE.read_text()
    assert [line for line in text.splitlines() if line.startswith("FROM")] == ["FROM python:3.11-slim"]
    assert "pip install" in text
    assert "fixtures" not in [word for line in text.splitlines() if line.startswith("COPY") for word in line.split()]
    assert 'ENTRYPOINT ["cxltierd"]' in text
