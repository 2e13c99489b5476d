"""The pure parsers of kernel attribute text (cxltierd/discovery/parse.py) on their own: normal text as the kernel
writes it, edge cases, and malformed text, which must raise ValueError (the discovery reader turns that into a
one-line warning naming the file; any other exception would escape it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxltierd.discovery.parse import (
    TIERING_COUNTERS,
    Watermarks,
    available_bytes,
    index_of,
    indexes,
    page_size_of,
    parse_bool,
    parse_cpulist,
    parse_distance,
    parse_int,
    parse_int_list,
    parse_kernel_release,
    parse_keyvals,
    parse_meminfo,
    parse_nvidia_numa_status,
    parse_watermarks,
    parse_zoneinfo,
)

# ---- parse_cpulist --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0-3,8\n", (0, 1, 2, 3, 8)),
        ("5", (5,)),
        ("0,2-3,7-7", (0, 2, 3, 7)),
        (" 2 , 4-5 \n", (2, 4, 5)),
        ("1,,2", (1, 2)),
        ("", ()),
        ("\n", ()),
    ],
)
def test_cpulist(text: str, want: tuple[int, ...]) -> None:
    assert parse_cpulist(text) == want


def test_cpulist_largest_range_is_accepted() -> None:
    cpus = parse_cpulist("0-65536")
    assert len(cpus) == 65537 and cpus[0] == 0 and cpus[-1] == 65536


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3-1", "bad range '3-1'"),
        ("0-70000", "bad range '0-70000'"),
        ("a", "invalid literal for int() with base 10: 'a'"),
        ("-1", "invalid literal for int() with base 10: ''"),
        ("0-", "invalid literal for int() with base 10: ''"),
        ("0x1", "invalid literal for int() with base 10: '0x1'"),
        ("1-2-3", "invalid literal for int() with base 10: '2-3'"),
    ],
)
def test_cpulist_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_cpulist(text)
    assert str(e.value) == message


# ---- parse_int ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "base", "want"),
    [
        ("42\n", 0, 42),
        ("0x10", 0, 16),
        ("0", 0, 0),
        ("-1", 0, -1),
        ("ff", 16, 255),
        ("0x40000000", 16, 1 << 30),
        ("010", 10, 10),
        (str((1 << 64) - 1), 0, (1 << 64) - 1),
        (str(-(1 << 63)), 0, -(1 << 63)),
    ],
)
def test_int(text: str, base: int, want: int) -> None:
    assert parse_int(text, base) == want


@pytest.mark.parametrize(
    ("text", "base", "message"),
    [
        (str(1 << 64), 0, "wider than 64 bits"),
        (str(-(1 << 63) - 1), 0, "wider than 64 bits"),
        ("0x" + "f" * 17, 0, "wider than 64 bits"),
        ("", 0, "invalid literal for int() with base 0: ''"),
        ("010", 0, "invalid literal for int() with base 0: '010'"),
        ("12abc", 0, "invalid literal for int() with base 0: '12abc'"),
        ("0x", 0, "invalid literal for int() with base 0: '0x'"),
        ("ff", 10, "invalid literal for int() with base 10: 'ff'"),
        ("1.5", 10, "invalid literal for int() with base 10: '1.5'"),
    ],
)
def test_int_malformed(text: str, base: int, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_int(text, base)
    assert str(e.value) == message


# ---- parse_meminfo --------------------------------------------------------------------------------------------------

NODE_MEMINFO = """\
Node 0 MemTotal:       24684096 kB
Node 0 MemFree:         1234567 kB
Node 0 MemUsed:        23449529 kB
Node 0 HugePages_Total:     0
Node 0 HugePages_Free:      0
"""

PROC_MEMINFO = """\
MemTotal:        2504536 kB
MemFree:         1963416 kB
HugePages_Total:       2
Hugepagesize:       2048 kB
"""


def test_node_meminfo_in_bytes_and_counts() -> None:
    assert parse_meminfo(NODE_MEMINFO) == {
        "MemTotal": 24684096 * 1024,
        "MemFree": 1234567 * 1024,
        "MemUsed": 23449529 * 1024,
        "HugePages_Total": 0,
        "HugePages_Free": 0,
    }


def test_proc_meminfo() -> None:
    got = parse_meminfo(PROC_MEMINFO)
    assert got == {"MemTotal": 2504536 << 10, "MemFree": 1963416 << 10, "HugePages_Total": 2, "Hugepagesize": 2 << 20}


def test_meminfo_skips_lines_without_a_name_or_value() -> None:
    assert parse_meminfo("garbage\n: 5\nMemFree:\nMemTotal: 1 kB\n") == {"MemTotal": 1024}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Name: value' lines"),
        ("garbage\nmore garbage\n", "no 'Name: value' lines"),
        ("MemTotal:\n", "no 'Name: value' lines"),
        ("MemTotal: x kB\n", "invalid literal for int() with base 10: 'x'"),
        ("MemTotal: 0x10 kB\n", "invalid literal for int() with base 10: '0x10'"),
    ],
)
def test_meminfo_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_meminfo(text)
    assert str(e.value) == message


# ---- parse_distance -------------------------------------------------------------------------------------------------


def test_distance_follows_the_online_nodes() -> None:
    assert parse_distance("10 21 14 24\n", (0, 1, 2, 4)) == {0: 10, 1: 21, 2: 14, 4: 24}
    assert parse_distance("", ()) == {}


@pytest.mark.parametrize(
    ("text", "online", "message"),
    [
        ("10", (0, 1), "1 distances for 2 online nodes"),
        ("10 20 30", (0, 1), "3 distances for 2 online nodes"),
        ("", (0,), "0 distances for 1 online nodes"),
        ("10 x", (0, 1), "invalid literal for int() with base 10: 'x'"),
    ],
)
def test_distance_malformed(text: str, online: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_distance(text, online)
    assert str(e.value) == message


# ---- parse_keyvals --------------------------------------------------------------------------------------------------


def test_keyvals_reads_name_value_lines_and_skips_others() -> None:
    text = "pgpromote_success 12\nnr_free_pages 3\n\nnot a counter line\nlonely\n"
    assert parse_keyvals(text) == {"pgpromote_success": 12, "nr_free_pages": 3}
    assert parse_keyvals("") == {}


def test_keyvals_malformed_value() -> None:
    with pytest.raises(ValueError) as e:
        parse_keyvals("pgmigrate_success 12\npgmigrate_fail many\n")
    assert str(e.value) == "invalid literal for int() with base 10: 'many'"


def test_tiering_counters_are_unique_vmstat_names() -> None:
    assert len(set(TIERING_COUNTERS)) == len(TIERING_COUNTERS)
    assert {"pgpromote_success", "pgdemote_kswapd", "pgmigrate_success"} <= set(TIERING_COUNTERS)
    assert all(name.isidentifier() and name == name.lower() for name in TIERING_COUNTERS)


# ---- parse_kernel_release -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "Linux version 6.12.95+deb12-amd64 (debian-kernel@lists.debian.org) (gcc 12.2.0) #1 SMP\n",
            ("6.12.95+deb12-amd64", (6, 12)),
        ),
        ("Linux version 5.4.0 #1", ("5.4.0", (5, 4))),
        ("Linux version 6.11-rc3", ("6.11-rc3", (6, 11))),
    ],
)
def test_kernel_release(text: str, want: tuple[str, tuple[int, int]]) -> None:
    assert parse_kernel_release(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Linux version X' at the start"),
        ("hello", "no 'Linux version X' at the start"),
        (" Linux version 6.1.0", "no 'Linux version X' at the start"),
        ("Linux version foo", "release 'foo' has no major.minor"),
        ("Linux version 6", "release '6' has no major.minor"),
    ],
)
def test_kernel_release_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_kernel_release(text)
    assert str(e.value) == message


# ---- parse_bool -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["true", "1\n", "Y", "y", "yes", "on", " TRUE "])
def test_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "0\n", "N", "n", "no", "off", "False"])
def test_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("maybe", "not a boolean: 'maybe'"),
        ("", "not a boolean: ''"),
        ("2", "not a boolean: '2'"),
        ("x" * 50, "not a boolean: '" + "x" * 20 + "'"),
    ],
)
def test_bool_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_bool(text)
    assert str(e.value) == message


# ---- parse_int_list -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [("12\n", (12,)), ("0,1", (0, 1)), ("1 2\n", (1, 2)), ("3, 4,", (3, 4)), ("", ()), ("\n", ())],
)
def test_int_list(text: str, want: tuple[int, ...]) -> None:
    assert parse_int_list(text) == want


def test_int_list_malformed() -> None:
    with pytest.raises(ValueError) as e:
        parse_int_list("1,a")
    assert str(e.value) == "invalid literal for int() with base 10: 'a'"


# ---- parse_nvidia_numa_status ---------------------------------------------------------------------------------------


def test_nvidia_numa_status() -> None:
    assert parse_nvidia_numa_status("Node: 2\nStatus: online\n") == (2, "online")
    assert parse_nvidia_numa_status("status :  offline_in_progress\nnode: 3\n") == (3, "offline_in_progress")
    assert parse_nvidia_numa_status("Node: -1\n") == (-1, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Status: online\n", "no 'Node:' line"),
        ("", "no 'Node:' line"),
        ("Node: x\n", "invalid literal for int() with base 10: 'x'"),
        ("Node:\n", "invalid literal for int() with base 10: ''"),
    ],
)
def test_nvidia_numa_status_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_nvidia_numa_status(text)
    assert str(e.value) == message


# ---- index_of, indexes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix", "want"),
    [
        ("memory110", "memory", 110),
        ("node0", "node", 0),
        ("memory", "memory", None),
        ("memoryx", "memory", None),
        ("memory-1", "memory", None),
        ("memory1x", "memory", None),
        ("node1", "memory", None),
        ("xmemory1", "memory", None),
    ],
)
def test_index_of(name: str, prefix: str, want: int | None) -> None:
    assert index_of(name, prefix) == want


def test_indexes_sorted_numerically_and_filtered() -> None:
    names = ["memory10", "memory2", "memoryx", "node1", "memory", "memory0", "power", "memory_tier4"]
    assert indexes(names, "memory") == [0, 2, 10]
    assert indexes([], "memory") == []


# ---- parse_zoneinfo -------------------------------------------------------------------------------------------------

ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 0
  pages free     3840
        boost    0
        min      34
        spanned  4095
        present  3998
        managed  3840
        protection: (0, 1946, 1946, 1946, 1946)
Node 0, zone   Normal
  pages free     400000
        present  524288
        managed  498000
Node 4, zone  Movable
  pages free     131072
        present  131072
        managed  131072
"""


def test_zoneinfo_present_and_managed_per_node_and_zone() -> None:
    assert parse_zoneinfo(ZONEINFO) == {
        0: {"DMA": (3998, 3840), "Normal": (524288, 498000)},
        4: {"Movable": (131072, 131072)},
    }


def test_zoneinfo_zone_without_counts_is_empty() -> None:
    assert parse_zoneinfo("Node 1, zone  Movable\n  pages free 0\n") == {1: {"Movable": (0, 0)}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Node N, zone Z' lines"),
        ("  present 5\n", "no 'Node N, zone Z' lines"),
        ("Node \n", "bad zone header 'Node '"),
        ("Node 0 1, zone DMA\n", "bad zone header 'Node 0 1, zone DMA'"),
        ("Node x, zone DMA\n", "invalid literal for int() with base 10: 'x'"),
        ("Node 0, zone DMA\n        present abc\n", "invalid literal for int() with base 10: 'abc'"),
        ("Node 0, zone DMA\n        managed 1.5\n", "invalid literal for int() with base 10: '1.5'"),
    ],
)
def test_zoneinfo_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_zoneinfo(text)
    assert str(e.value) == message


# ---- parse_watermarks, available_bytes, page_size_of ----------------------------------------------------------------

MARKS = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_file 597
      pgpromote_success 0
  pages free     3712
        boost    0
        min      140
        low      175
        high     210
        promo    245
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 991, 991, 991, 991)
      nr_free_pages 3712
  pagesets
    cpu: 0
              count: 10
              high:  0
Node 0, zone  Movable
  pages free     0
        min      32
        low      32
        high     32
        managed  0
        protection: (0, 0, 0, 0, 0)
Node 4, zone  Movable
  pages free     131072
        min      128
        low      1322
        high     2516
        managed  131072
        protection: (0, 0, 0, 0, 0)
"""


def test_watermarks_summed_per_node_as_the_kernel_does() -> None:
    # low: every zone's, empty ones too (si_mem_available sums them all); reserve: high + largest protection,
    # capped at the zone's managed pages (calculate_totalreserve_pages), so an empty zone reserves nothing.
    # Per-CPU "high:" lines of the pagesets are not the zone's high watermark.
    assert parse_watermarks(MARKS) == {
        0: Watermarks(low=175 + 32, reserve=210 + 991, managed=3840),
        4: Watermarks(low=1322, reserve=2516, managed=131072),
    }


def test_watermarks_reserve_capped_at_managed() -> None:
    text = "Node 1, zone Normal\n        high     900\n        managed  500\n        protection: (0, 300)\n"
    assert parse_watermarks(text) == {1: Watermarks(low=0, reserve=500, managed=500)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Node N, zone Z' lines"),
        ("Node 0 1, zone DMA\n", "bad zone header 'Node 0 1, zone DMA'"),
        ("Node 0, zone DMA\n        low x\n", "invalid literal for int() with base 10: 'x'"),
        ("Node 0, zone DMA\n        protection: (0, y)\n", "invalid literal for int() with base 10: 'y'"),
    ],
)
def test_watermarks_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_watermarks(text)
    assert str(e.value) == message


KiB, GiB = 1024, 1 << 30


def test_available_counts_page_cache_and_slab_above_the_low_marks() -> None:
    info = {"MemFree": 2 * GiB, "Active(file)": 10 * GiB, "Inactive(file)": 30 * GiB, "KReclaimable": 1 * GiB}
    marks = Watermarks(low=25_000, reserve=40_000, managed=16 << 20)
    low, reserve = 25_000 * 4096, 40_000 * 4096
    want = (2 * GiB - reserve) + (40 * GiB - low) + (1 * GiB - low)
    assert available_bytes(info, marks, 4096) == want
    # Without watermarks nothing is held back; without file or slab lines only free memory counts
    assert available_bytes(info, None, 4096) == 43 * GiB
    assert available_bytes({"MemFree": 5 * GiB}, marks, 4096) == 5 * GiB - reserve


def test_available_keeps_half_of_a_small_cache_and_never_goes_negative() -> None:
    marks = Watermarks(low=1000, reserve=5000, managed=100_000)
    # cache of 1000 pages: half of it (500) is kept, not the low mark (1000)
    info = {"MemFree": 10_000 * 4096, "Inactive(file)": 1000 * 4096}
    assert available_bytes(info, marks, 4096) == (10_000 - 5000 + 500) * 4096
    assert available_bytes({"MemFree": 100 * 4096}, marks, 4096) == 0
    assert available_bytes({"MemTotal": 4096}, marks, 4096) is None


def test_available_reads_sreclaimable_when_kreclaimable_is_missing() -> None:
    old = {"MemFree": 1 * GiB, "SReclaimable": 1 * GiB}
    assert available_bytes(old, None, 4096) == 2 * GiB
    both = {**old, "KReclaimable": 3 * GiB}  # KReclaimable includes SReclaimable: never both
    assert available_bytes(both, None, 4096) == 4 * GiB


def test_page_size_from_memtotal_over_managed_pages() -> None:
    assert page_size_of(16 * GiB, 16 * GiB // 4096) == 4096
    assert page_size_of(480 * GiB - 7 * 65536, 480 * GiB // 65536) == 65536  # arm64 64K (Grace)
    assert page_size_of(1 * GiB, 1 * GiB // 16384 + 3) == 16384
    assert page_size_of(1 * GiB, 0) == 4096


def test_available_summed_over_nodes_matches_the_kernels_memavailable() -> None:
    """On the lab's real 6.12 tree the per-node figures add up to /proc/meminfo's MemAvailable (the files were read
    a moment apart, hence a small tolerance)."""
    root = Path(__file__).resolve().parents[2] / "fixtures/hosts/qemu-cxl-node4"
    marks = parse_watermarks((root / "proc/zoneinfo").read_text())
    nodes = [parse_meminfo((root / f"sys/devices/system/node/node{n}/meminfo").read_text()) for n in (0, 1, 2, 4)]
    keys = ("MemFree", "Active(file)", "Inactive(file)", "KReclaimable")
    total = {k: sum(n[k] for n in nodes) for k in keys}
    every = Watermarks(low=sum(m.low for m in marks.values()), reserve=sum(m.reserve for m in marks.values()))
    kernel = parse_meminfo((root / "proc/meminfo").read_text())["MemAvailable"]
    ours = available_bytes(total, every, 4096)
    assert ours is not None and abs(ours - kernel) < 0.001 * kernel
    assert {page_size_of(n["MemTotal"], marks[i].managed) for n, i in zip(nodes, (0, 1, 2, 4), strict=True)} == {4096}
