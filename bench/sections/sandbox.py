"""The cost of the sandbox: ours with every process confined against ours
with `RK_SANDBOX=off`, in the same run, taking turns.

Both sides run through the same one-line wrapper (`exec env RK_SANDBOX=...
REAL_ROOTLESSKIT "$@"`), so the wrapper's exec costs both alike. In the table
the "ours" column is the sandbox on, the "theirs" column the sandbox off, and
the ratio is on/off (the issue's target: within 3 % for throughput, within
1 ms for start-up).
"""

import os
import sys
from pathlib import Path

import bench as b

ROUNDS = int(os.environ.get("RK_BENCH_IPERF_ROUNDS", "3"))


def _wrapped(ours, name, mode, work):
    """An Impl whose rootlesskit runs ours with RK_SANDBOX=mode."""
    d = work / f"sandbox-{mode}"
    d.mkdir(parents=True, exist_ok=True)
    w = d / "rootlesskit"
    w.write_text(f'#!/bin/sh\nexec env RK_SANDBOX={mode} {ours.rootlesskit} "$@"\n')
    os.chmod(w, 0o755)
    os.chmod(d, 0o755)
    return b.Impl(name, d)


def section_sandbox(bench):
    ours = next((i for i in bench.impls if i.name == "ours"), None)
    if ours is None or ours.error:
        b.log("sandbox: ours is not available; skipped")
        return
    work = Path(ours.bin_dir).parent
    on = _wrapped(ours, "ours", "on", work)
    off = _wrapped(ours, "theirs", "off", work)
    sub = b.Bench([on, off], bench.runs)
    gvtap = sys.modules.get("bench_sections_gvtap")
    ports = sys.modules.get("bench_sections_ports")

    for net in ("slirp4netns", "gvisor-tap-vsock"):
        args = [f"--net={net}", "--disable-host-loopback"]
        sub.measure(
            "sandbox",
            f"--net={net} true, sandbox on (ours) / off (theirs) (median of {bench.runs})",
            "ms",
            True,
            lambda impl, a=args: b.measure_startup(impl, a, bench.runs),
        )
    sub.measure(
        "sandbox",
        f"gvisor-tap-vsock child->host MTU 1500, on / off (median of {ROUNDS})",
        "Gbit/s",
        False,
        lambda impl: b.measure_iperf(impl, ["--net=gvisor-tap-vsock", "--mtu=1500"], "10.0.2.1"),
        ROUNDS,
    )
    if ports is not None:
        sub.measure(
            "sandbox",
            f"builtin host->child (slirp4netns), on / off (median of {ROUNDS})",
            "Gbit/s",
            False,
            lambda impl: ports.measure_forward(impl, ["--net=slirp4netns", "--port-driver=builtin"]),
            ROUNDS,
        )
    if gvtap is not None:
        sub.measure(
            "sandbox",
            f"host->child via --port-driver=gvisor-tap-vsock, on / off (median of {ROUNDS})",
            "Gbit/s",
            False,
            lambda impl: gvtap.host_to_child(impl, "gvisor-tap-vsock")[0],
            ROUNDS,
        )
    bench.rows.extend(sub.rows)


SECTIONS = {"sandbox": section_sandbox}
