"""--net=vpnkit: start-up, iperf3 child->host through rk-vpnkit's frame pump
at MTU 1500, and what the pump costs in CPU.

vpnkit itself is not packaged here: the peer is gvproxy (gvisor-tap-vsock
0.8.1, which serves vpnkit's ethernet protocol) behind the test shim
tests/fixtures/vpnkit-shim/vpnkit, given as --vpnkit-binary. The iperf3
server listens on the host's 127.0.0.1 and the client inside reaches it as
192.168.127.254, gvproxy's address for the host's loopback.

RootlessKit 2.0.2 as packaged by Debian has vpnkit compiled out, so only
"ours" has figures; gvproxy's own CPU per gigabit is printed beside the
pump's for scale (the peer does the TCP/IP work, the pump only moves frames).
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import bench as b

HOST = "192.168.127.254"
MTU = 1500
THEIRS_NOTE = "vpnkit compiled out of Debian's RootlessKit 2.0.2"


def _shim():
    """A `vpnkit` the test user can run: the shim, told where gvproxy is."""
    d = Path(tempfile.mkdtemp(prefix="rk-bench-vpnkit-"))
    os.chmod(d, 0o755)
    real = d / "vpnkit-shim"
    shutil.copy2(b.REPO / "tests" / "fixtures" / "vpnkit-shim" / "vpnkit", real)
    os.chmod(real, 0o755)
    wrapper = d / "vpnkit"
    wrapper.write_text(f'#!/bin/sh\nRK_PEERS_DIR={b.PEERS_DIR} exec {real} "$@"\n')
    os.chmod(wrapper, 0o755)
    return d, wrapper


def _cpu_seconds(pid):
    """utime + stime of pid (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _find(root, names):
    found = {}
    for pid in b.descendants(root):
        st = b.proc_status(pid)
        if st and st.get("Name") in names:
            found.setdefault(st["Name"], pid)
    return found


def measure_pump(impl, shim, bitrate=None, reverse=False):
    """One iperf3 run child->host. CMD sleeps a second before and after the
    transfer, so that CPU samples of rk-vpnkit and gvproxy taken then bracket
    exactly the transfer. `bitrate` (e.g. "600M") caps iperf3's rate;
    `reverse` makes it host->child (iperf3 -R). Returns (bits/s, pump CPU s, gvproxy CPU s, seconds of transfer)."""
    server, port = b.start_iperf_server()
    proc = None
    try:
        cap = (f" -b {bitrate}" if bitrate else "") + (" -R" if reverse else "")
        script = f"sleep 1; iperf3 -c {HOST} -p {port} -t {b.IPERF_SECONDS}{cap} -J; sleep 1"
        argv = [
            impl.rootlesskit,
            "--net=vpnkit",
            f"--vpnkit-binary={shim}",
            f"--mtu={MTU}",
            "--disable-host-loopback",
            "--",
            "sh",
            "-c",
            script,
        ]
        proc = b.spawn_user(argv, stdout=subprocess.PIPE)
        root = proc.pid
        deadline = time.monotonic() + b.STARTUP_WAIT
        pids = {}
        while len(pids) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise b.MeasureError(
                    f"rk-vpnkit and gvproxy did not both start: {' '.join(argv)}"
                    f"\n{b.tail(proc.stderr.read().decode(errors='replace') if proc.poll() is not None else '')}"
                )
            pids = _find(root, {"rk-vpnkit", "gvproxy"})
            time.sleep(0.02)
        pump, peer = pids["rk-vpnkit"], pids["gvproxy"]
        before = (_cpu_seconds(pump), _cpu_seconds(peer), time.monotonic())
        # Wait for iperf3 to come and go.
        seen = False
        deadline = time.monotonic() + b.IPERF_SECONDS + b.RUN_TIMEOUT
        while time.monotonic() < deadline:
            running = "iperf3" in _find(root, {"iperf3"})
            if running:
                seen = True
            elif seen:
                break
            time.sleep(0.05)
        after = (_cpu_seconds(pump), _cpu_seconds(peer), time.monotonic())
        out, err = proc.communicate(timeout=b.RUN_TIMEOUT)
        if proc.returncode != 0:
            raise b.MeasureError(
                f"exit {proc.returncode}: {' '.join(argv)}\n{b.tail(err.decode(errors='replace'))}"
            )
        try:
            result = json.loads(out)
            bps = float(result["end"]["sum_received"]["bits_per_second"])
            seconds = float(result["end"]["sum_received"]["seconds"])
        except (ValueError, KeyError) as e:
            raise b.MeasureError(f"cannot parse iperf3 -J output ({e}):\n{b.tail(out.decode())}")
        return bps, after[0] - before[0], after[1] - before[1], seconds
    finally:
        if proc is not None and proc.poll() is None:
            b.kill_tree(proc.pid, proc)
        b.stop_iperf_server(server)


def _ours_only(bench, section, metric, unit, lower_is_better, fn, note=False):
    """A row for ours; theirs has no vpnkit (not an error of this run), which
    the row says when `note` is set."""
    ours = [i for i in bench.impls if i.name == "ours"]
    if note:
        metric = f"{metric} [theirs: {THEIRS_NOTE}]"
    row = b.Row(section, metric, unit, lower_is_better)
    for impl in ours:
        if impl.error:
            row.values[impl.name] = None
            row.errors[impl.name] = impl.error
            continue
        b.log(f"{section}: {metric} [{impl.name}]")
        try:
            row.values[impl.name] = fn(impl)
            b.log(f"  -> {b.fmt_value(row.values[impl.name], unit)}")
        except b.MeasureError as e:
            row.values[impl.name] = None
            row.errors[impl.name] = str(e)
            b.log(f"  -> FAILED: {e}")
    bench.rows.append(row)


def section_vpnkit(bench):
    d, shim = _shim()
    try:
        _ours_only(
            bench,
            "vpnkit",
            f"--net=vpnkit true (median of {bench.runs})",
            "ms",
            True,
            lambda impl: b.measure_startup(
                impl, ["--net=vpnkit", f"--vpnkit-binary={shim}", "--disable-host-loopback"], bench.runs
            ),
            note=True,
        )
        results = {}

        def run(impl, bitrate=None, reverse=False):
            key = (impl.name, bitrate, reverse)
            if key not in results:
                results[key] = measure_pump(impl, shim, bitrate, reverse)
            return results[key]

        def gbit(impl):
            return run(impl)[0]

        def pump_share(bitrate):
            def f(impl):
                _, cpu, _, seconds = run(impl, bitrate)
                return 100.0 * cpu / seconds

            return f

        def per_gbit(which):
            def f(impl):
                bps, pump, peer, seconds = run(impl)
                gigabits = bps * seconds / 1e9
                return 1000.0 * (pump if which == "pump" else peer) / gigabits

            return f

        _ours_only(bench, "vpnkit", f"child->host MTU {MTU} through gvproxy", "Gbit/s", False, gbit)
        _ours_only(bench, "vpnkit", "rk-vpnkit CPU during that transfer", "% core", True, pump_share(None))
        _ours_only(bench, "vpnkit", "rk-vpnkit CPU per gigabit", "ms/Gbit", True, per_gbit("pump"))
        _ours_only(
            bench, "vpnkit", "gvproxy CPU per gigabit (the peer, for scale)", "ms/Gbit", True, per_gbit("peer")
        )
        _ours_only(
            bench,
            "vpnkit",
            f"host->child MTU {MTU} through gvproxy (iperf3 -R)",
            "Gbit/s",
            False,
            lambda impl: run(impl, reverse=True)[0],
        )
        _ours_only(
            bench,
            "vpnkit",
            "rk-vpnkit CPU during that transfer",
            "% core",
            True,
            lambda impl: 100.0 * run(impl, reverse=True)[1] / run(impl, reverse=True)[3],
        )
        _ours_only(
            bench,
            "vpnkit",
            "rk-vpnkit CPU at 0.6 Gbit/s (iperf3 -b 600M)",
            "% core",
            True,
            pump_share("600M"),
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)


SECTIONS = {"vpnkit": section_vpnkit}
