import os

import pytest

from cxltierd.errors import HostFSError, RootError
from cxltierd.hostfs import HostFS


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "sys/devices/system/node/node0"
    d.mkdir(parents=True)
    (d / "cpulist").write_text("0-3\n")
    (d / "bad").write_text("zz\n")
    (tmp_path / "sys/bus/cxl/devices").mkdir(parents=True)
    os.symlink("../../../devices/system/node/node0", tmp_path / "sys/bus/cxl/devices/n0")
    os.symlink("/nonexistent/elsewhere", tmp_path / "sys/bus/cxl/devices/dangling")
    return tmp_path


def test_reads_under_root(tree):
    fs = HostFS(tree)
    assert fs.read("/sys/devices/system/node/node0/cpulist") == "0-3"
    assert fs.listdir("/sys/bus/cxl/devices") == ["dangling", "n0"]
    assert fs.listdir("/sys/nothing") == []
    assert fs.realpath("/sys/bus/cxl/devices/n0") == "/sys/devices/system/node/node0"
    assert fs.link_name("/sys/bus/cxl/devices/n0") == "node0"


def test_errors_name_the_file(tree):
    fs = HostFS(tree)
    with pytest.raises(HostFSError, match=r"node0/bad: malformed integer 'zz'"):
        fs.read_int("/sys/devices/system/node/node0/bad")
    with pytest.raises(HostFSError, match="missing"):
        fs.read("/sys/devices/system/node/node0/nope")
    with pytest.raises(HostFSError, match="missing"):
        fs.read("/sys/bus/cxl/devices/dangling")
    with pytest.raises(HostFSError, match="is a directory"):
        fs.read("/sys/devices/system/node/node0")
    assert fs.read_optional("/sys/devices/system/node/node0/nope") is None


def test_check_root(tmp_path, tree):
    HostFS(tree).check_root()
    with pytest.raises(RootError, match="does not exist"):
        HostFS(tmp_path / "missing").check_root()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RootError, match="not a sysfs tree"):
        HostFS(tmp_path / "empty").check_root()
