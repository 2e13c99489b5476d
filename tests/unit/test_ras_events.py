"""The CXL trace-line parser: every event the lab captured on both kernels (exact values), the events the lab
could not make the kernel emit (lines built from the kernels' TP_printk formats), and malformed input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cxltierd.ras.events import EVENT_NAMES, ParseError, RasEvent, parse_line, parse_lines

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ras"
KERNELS = ("6.12", "7.3")
TIMES = {"6.12": (43.263110, 43.280200, 43.280881, 46.769849), "7.3": (60.234375, 60.245001, 60.257711, 63.904108)}
HEALTH = {
    "health_status": "MAINTENANCE_NEEDED|PERFORMANCE_DEGRADED",
    "media_status": "All Data Loss in Event of Power Loss",
    "as_life_used": "Normal",
    "as_dev_temp": "Normal",
    "as_cor_vol_err_cnt": "Normal",
    "as_cor_per_err_cnt": "Normal",
    "life_used": 33,
    "device_temp": 56,
    "dirty_shutdown_cnt": 1,
    "cor_vol_err_cnt": 100,
    "cor_per_err_cnt": 0,
}


def captured(kernel: str) -> list[RasEvent]:
    events, errors = parse_lines((FIXTURES / f"cxl-events-{kernel}.trace").read_text().splitlines())
    assert errors == []
    return events


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_captured_event_reads_exactly(kernel):
    media, dram, module, poison = captured(kernel)
    t = TIMES[kernel]
    assert (media.name, media.time, media.memdev, media.host, media.log) == (
        "cxl_general_media",
        t[0],
        "mem0",
        "0000:0d:00.0",
        "Failure",
    )
    assert (media.kind, media.dpa, media.hpa, media.length, media.region) == (
        "uncorrectable",
        0x1000,
        0x370001000,
        None,
        "region0",
    )
    assert media.fields["descriptor"] == "UNCORRECTABLE_EVENT|THRESHOLD_EVENT"
    assert media.fields["comp_id"] == " ".join(["00"] * 16)
    assert (dram.name, dram.time, dram.kind, dram.log) == ("cxl_dram", t[1], "uncorrectable", "Failure")
    assert (dram.dpa, dram.hpa, dram.region, dram.memdev) == (0x2000, 0x370002000, "region0", "mem0")
    assert dram.fields["type"] == "Data Path Error" and dram.fields["validity_flags"] == "CHANNEL|RANK"
    assert dram.fields["cor_mask"] == " ".join(["00"] * 32)
    assert (module.name, module.time, module.kind, module.log, module.memdev) == (
        "cxl_memory_module",
        t[2],
        "health",
        "Fatal",
        "mem0",
    )
    assert module.health == HEALTH
    assert (module.dpa, module.hpa, module.region) == (None, None, None)
    assert module.fields["event_type"] == "Temperature Change"
    assert (poison.name, poison.time, poison.kind, poison.memdev, poison.log) == (
        "cxl_poison",
        t[3],
        "poison",
        "mem0",
        None,
    )
    assert (poison.dpa, poison.hpa, poison.length, poison.region) == (0x40000, 0x370040000, 0x40, "region0")
    assert poison.fields["trace_type"] == "List" and poison.fields["flags"] == ""
    assert all(e.health == {} for e in (media, dram, poison))


def test_the_newer_kernels_extra_fields_are_kept_and_an_all_ones_alias_is_text():
    media = captured("7.3")[0]
    assert media.fields["sub_type"] == "Not Reported" and media.fields["cme_count"] == "0"
    assert media.fields["type"] == "TE State Violation" and media.fields["hpa_alias0"] == "ffffffffffffffff"
    assert "sub_type" not in captured("6.12")[0].fields


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_names_list_covers_every_event_the_kernel_defines(kernel):
    names = (FIXTURES / f"cxl-event-names-{kernel}.txt").read_text().split()
    assert {n for n in names if n.startswith("cxl_")} <= set(EVENT_NAMES)


# Not captured (the lab's AER injections produced no event): built from the kernels' TP_printk formats.
HEAD = " irq/33-0000:0d:-208     [001] d..1.   120.000001: "
BUILT = {
    "cxl_aer_correctable_error": "memdev=mem1 host=0000:0e:00.0 serial=7: status: 'Memory Data ECC Error'",
    "cxl_aer_uncorrectable_error": "memdev=mem1 host=0000:0e:00.0 serial=7: status: 'Memory Data ECC Error' "
    "first_error: 'Memory Data ECC Error'",
    "cxl_port_aer_correctable_error": "device=port1 parent=root0 status='CRC Threshold Hit'",
    "cxl_port_aer_uncorrectable_error": "device=port1 parent=root0 status: 'Cache Data Parity Error' "
    "first_error: 'Cache Data Parity Error'",
    "cxl_overflow": "memdev=mem1 host=0000:0e:00.0 serial=7: log=Warning : 12 records from 1000 to 2000",
    "cxl_generic_event": "memdev=mem1 host=0000:0e:00.0 serial=7 log=Informational : time=5 "
    "uuid=ba5eba11-abcd-efeb-a55a-a55aa5a55aa5 len=128 flags='' handle=3 related_handle=0 maint_op_class=0 : "
    "de ad be ef 00",
    "cxl_memory_sparing": "memdev=mem1 host=0000:0e:00.0 serial=7 log=Informational : time=5 "
    "uuid=e71f3a40-2d29-4092-8a39-4d1c966c7c65 len=128 flags='' handle=4 related_handle=0 maint_op_class=1 : "
    "flags='QUERY_RESOURCES' result=0 validity_flags='CHANNEL' res_avail=1 channel=2 rank=0",
}
KIND = {
    "cxl_aer_correctable_error": "corrected",
    "cxl_aer_uncorrectable_error": "uncorrectable",
    "cxl_port_aer_correctable_error": "corrected",
    "cxl_port_aer_uncorrectable_error": "uncorrectable",
    "cxl_overflow": "overflow",
    "cxl_generic_event": "other",
    "cxl_memory_sparing": "other",
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_events_built_from_the_kernel_formats(name):
    event = parse_line(f"{HEAD}{name}: {BUILT[name]}")
    assert isinstance(event, RasEvent), event
    assert (event.name, event.time, event.kind) == (name, 120.000001, KIND[name])
    assert event.memdev == ("port1" if "port" in name else "mem1")


def test_built_event_fields():
    unc = parse_line(f"{HEAD}cxl_aer_uncorrectable_error: {BUILT['cxl_aer_uncorrectable_error']}")
    assert isinstance(unc, RasEvent)
    assert unc.fields["serial"] == "7" and unc.fields["status"] == "Memory Data ECC Error"
    assert unc.fields["first_error"] == "Memory Data ECC Error" and unc.host == "0000:0e:00.0"
    over = parse_line(f"{HEAD}cxl_overflow: {BUILT['cxl_overflow']}")
    assert isinstance(over, RasEvent) and over.log == "Warning"
    assert (over.fields["count"], over.fields["first_ts"], over.fields["last_ts"]) == ("12", "1000", "2000")
    generic = parse_line(f"{HEAD}cxl_generic_event: {BUILT['cxl_generic_event']}")
    assert isinstance(generic, RasEvent) and generic.fields["data"] == "de ad be ef 00"
    port = parse_line(f"{HEAD}cxl_port_aer_correctable_error: {BUILT['cxl_port_aer_correctable_error']}")
    assert isinstance(port, RasEvent) and port.host == "root0" and port.fields["status"] == "CRC Threshold Hit"


def test_an_unmapped_dpa_has_no_hpa_or_region():
    line = f"{HEAD}cxl_dram: memdev=mem2 log=Informational : dpa=3000 descriptor='' hpa=ffffffffffffffff region="
    event = parse_line(line)
    assert isinstance(event, RasEvent)
    assert (event.kind, event.dpa, event.hpa, event.region) == ("corrected", 0x3000, None, None)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   \n",
        "# tracer: nop",
        "#           TASK-PID     CPU#",
        "bash-1 [000] ..... 1.0: sched_switch: prev=a",
        "random words with no event",
    ],
)
def test_lines_that_are_not_cxl_events_are_none(line):
    assert parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{HEAD}cxl_dram: memdev=mem0 log=Failure : dpa=zz12 hpa=370002000", "dpa: not a hexadecimal number: 'zz12'"),
        (f"{HEAD}cxl_poison: memdev=mem0 hpa=0x370040000 dpa=0x40000 dpa_length=0xq", "dpa_length: not a hexadec"),
        (f"{HEAD}cxl_memory_module: memdev=mem0 log=Fatal : life_used=lots", "life_used: not a decimal number"),
        (f"{HEAD}cxl_dram: host=0000:0d:00.0 log=Failure : dpa=2000", "cxl_dram: no memdev= field"),
        (f"{HEAD}cxl_overflow: memdev=mem0 serial=0: log=Failure : garbled", "no 'N records from T1 to T2' text"),
        ("cxl_dram: memdev=mem0 with no header", "not a tracefs event line"),
    ],
)
def test_malformed_cxl_lines_give_one_line_errors(line, reason):
    error = parse_line(line)
    assert isinstance(error, ParseError)
    assert reason in error.reason
    text = str(error)
    assert "\n" not in text and text.startswith("trace line ") and reason in text


def test_parse_lines_keeps_going_past_bad_lines():
    good = (FIXTURES / "cxl-events-6.12.trace").read_text().splitlines()
    events, errors = parse_lines([good[-1], f"{HEAD}cxl_dram: memdev=mem0 dpa=zz", "x" * 300 + " cxl_", good[-2]])
    assert [e.name for e in events] == ["cxl_poison", "cxl_memory_module"]
    assert len(errors) == 2 and all(len(str(e)) < 200 for e in errors)


@pytest.mark.parametrize(
    "head",
    [
        "bash-342 [000] 46.769849: ",  # no flags column (trace_options noirq-info)
        "bash-342    (    342) [000] ..... 46.769849: ",  # record-tgid on
        "          <idle>-0       [001] d.h1. 46.769849: ",
    ],
)
def test_header_variants(head):
    event = parse_line(f"{head}cxl_poison: memdev=mem3 hpa=0x1000 dpa=0x0 dpa_length=0x40 trace_type=List")
    assert isinstance(event, RasEvent)
    assert (event.time, event.memdev, event.dpa, event.hpa, event.length) == (46.769849, "mem3", 0, 0x1000, 0x40)


def test_a_general_media_line_without_memdev_does_not_take_its_device_field():
    error = parse_line(f"{HEAD}cxl_general_media: host=0000:0d:00.0 log=Failure : dpa=1000 device=0 channel=0")
    assert isinstance(error, ParseError) and error.reason == "cxl_general_media: no memdev= field"


def test_mangled_captured_lines_never_raise():
    lines = []
    for kernel in KERNELS:
        lines += [x for x in (FIXTURES / f"cxl-events-{kernel}.trace").read_text().splitlines() if "cxl_" in x]
    rng = random.Random(11)
    for _ in range(3000):
        chars = list(rng.choice(lines))
        for _ in range(rng.randint(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice("=:' x0f-[]\t")
        cut = rng.randint(1, len(chars))
        got = parse_line("".join(chars[:cut]))
        assert got is None or isinstance(got, RasEvent | ParseError)
        if isinstance(got, ParseError):
            assert "\n" not in str(got)
