"""--net=pasta: start-up, iperf3 child->host at MTU 65520 and 1500, and
host->child through the implicit port driver, side by side with RootlessKit
2.0.2's pasta driver.

Both run the same pasta (Debian 12's passt 2023_03_09). child->host: the
iperf3 server listens on the host's 127.0.0.1 and the client inside reaches
it as 10.0.2.2 (pasta maps its gateway to the host's loopback, so no
--disable-host-loopback there). host->child: `iperf3 -s -1 -p P` runs inside
with --port-driver=implicit and the client, on the host, connects to
127.0.0.1:P. With this pasta, RootlessKit's forwarding is pasta's own
(`-t auto`, working here only because it also leaves `-T auto` on); ours is
rk-pasta's splice forwarder (see docs/pasta.md).
"""

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import bench as b

IMPLICIT = ["--net=pasta", "--port-driver=implicit"]


def measure_host_to_child(impl):
    """iperf3 host->child through the implicit port: the server inside
    rootlesskit, the client on the host. Returns received bits per second."""
    port = b.free_loopback_port()
    argv = [
        impl.rootlesskit,
        *IMPLICIT,
        "--copy-up=/etc",
        "--disable-host-loopback",
        "--",
        "iperf3",
        "-s",
        "-1",
        "-p",
        str(port),
    ]
    proc = b.spawn_user(argv)
    try:
        deadline = time.monotonic() + b.STARTUP_WAIT
        while not b.host_listening(port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")
                raise b.MeasureError(f"exited {proc.returncode} early: {' '.join(argv)}\n{b.tail(err)}")
            if time.monotonic() > deadline:
                raise b.MeasureError(f"127.0.0.1:{port} was not forwarded within {b.STARTUP_WAIT}s")
            time.sleep(0.05)
        r = b.iperf_client(port)
        try:
            return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])
        except (ValueError, KeyError) as e:
            raise b.MeasureError(
                f"iperf3 client failed ({e}), exit {r.returncode}:\n{b.tail(r.stdout)}{b.tail(r.stderr)}"
            )
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                b.kill_tree(proc.pid, proc)


# One process inside serving every connection: echoes what it reads.
ECHO_SERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(4096); l.setblocking(False)
sel.register(l, selectors.EVENT_READ)
while True:
    ev = sel.select(30)
    if not ev:
        sys.exit(0)
    for key, _ in ev:
        if key.fileobj is l:
            try:
                c, _ = l.accept()
            except OSError:
                continue
            c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        else:
            try:
                d = key.fileobj.recv(4096)
            except OSError:
                d = b""
            if d:
                key.fileobj.send(d)
            else:
                sel.unregister(key.fileobj); key.fileobj.close()
"""

CONNECTIONS = 5000


def measure_many_connections(impl):
    """Opens CONNECTIONS connections at once from the host to an echo server
    inside through the implicit port, sends a line on each and reads it
    back, all held open. Returns (answered, seconds)."""
    port = b.free_loopback_port()
    fd, server = tempfile.mkstemp(suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(ECHO_SERVER)
    os.chmod(server, 0o644)
    argv = [
        impl.rootlesskit,
        *IMPLICIT,
        "--copy-up=/etc",
        "--disable-host-loopback",
        "--",
        "sh",
        "-c",
        f"ulimit -n $(ulimit -Hn); exec python3 {server} {port}",
    ]
    proc = b.spawn_user(argv)
    conns = []
    try:
        deadline = time.monotonic() + b.STARTUP_WAIT
        while not b.host_listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise b.MeasureError(f"127.0.0.1:{port} was not forwarded")
            time.sleep(0.05)
        # The inside server may come up after the host's port.
        time.sleep(1)
        started = time.monotonic()
        for _ in range(CONNECTIONS):
            try:
                conns.append(socket.create_connection(("127.0.0.1", port), 5))
            except OSError:
                pass
        answered = 0
        for i, s in enumerate(conns):
            try:
                s.sendall(b"c%d\n" % i)
            except OSError:
                pass
        for i, s in enumerate(conns):
            want, got = b"c%d\n" % i, b""
            s.settimeout(10)
            try:
                while len(got) < len(want):
                    more = s.recv(len(want) - len(got))
                    if not more:
                        break
                    got += more
            except OSError:
                pass
            answered += got == want
        return answered, time.monotonic() - started
    finally:
        for s in conns:
            s.close()
        b.kill_tree(proc.pid, proc)
        os.unlink(server)


def section_pasta(bench):
    for label, rk_args in [
        ("--net=pasta", ["--net=pasta", "--disable-host-loopback"]),
        ("--net=pasta --port-driver=implicit", [*IMPLICIT, "--disable-host-loopback"]),
    ]:
        bench.measure(
            "pasta",
            f"{label} true (median of {bench.runs})",
            "ms",
            True,
            lambda impl, a=rk_args: b.measure_startup(impl, a, bench.runs),
        )
    for mtu in (65520, 1500):
        bench.measure(
            "pasta",
            f"child->host MTU {mtu} (median of {b.IPERF_ROUNDS})",
            "Gbit/s",
            False,
            lambda impl, m=mtu: b.measure_iperf(impl, ["--net=pasta", f"--mtu={m}"], "10.0.2.2"),
            rounds=b.IPERF_ROUNDS,
        )
    bench.measure(
        "pasta",
        f"host->child via implicit port (median of {b.IPERF_ROUNDS})",
        "Gbit/s",
        False,
        measure_host_to_child,
        rounds=b.IPERF_ROUNDS,
    )
    results = {}

    def many(impl, which):
        if impl.name not in results:
            results[impl.name] = measure_many_connections(impl)
        return results[impl.name][which]

    bench.measure(
        "pasta",
        f"host->child: of {CONNECTIONS} concurrent connections via implicit port, answered",
        "",
        False,
        lambda impl: many(impl, 0),
    )
    bench.measure(
        "pasta",
        f"host->child: {CONNECTIONS} concurrent connections opened and echoed",
        "s",
        True,
        lambda impl: many(impl, 1),
    )

    sandbox_on_off(bench)


def _with_sandbox(ours, name, mode):
    """An Impl whose rootlesskit runs ours with RK_SANDBOX=mode (the same
    one-line wrapper for both sides, so the extra exec costs both alike)."""
    d = Path(ours.bin_dir).parent / f"pasta-sandbox-{mode}"
    d.mkdir(parents=True, exist_ok=True)
    w = d / "rootlesskit"
    w.write_text(f'#!/bin/sh\nexec env RK_SANDBOX={mode} {ours.rootlesskit} "$@"\n')
    os.chmod(w, 0o755)
    os.chmod(d, 0o755)
    return b.Impl(name, d)


def sandbox_on_off(bench):
    """rk-pasta's sandbox (docs/security.md) on against off, in the same
    run, taking turns: the "ours" column is on, "theirs" off, the ratio
    on/off (the target: start-up within 1 ms, throughput within 3 %)."""
    ours = next((i for i in bench.impls if i.name == "ours"), None)
    if ours is None or ours.error:
        b.log("pasta sandbox: ours is not available; skipped")
        return
    sub = b.Bench([_with_sandbox(ours, "ours", "on"), _with_sandbox(ours, "theirs", "off")], bench.runs)
    for label, rk_args in [
        ("--net=pasta", ["--net=pasta", "--disable-host-loopback"]),
        ("--net=pasta --port-driver=implicit", [*IMPLICIT, "--disable-host-loopback"]),
    ]:
        sub.measure(
            "pasta",
            f"{label} true, sandbox on (ours) / off (theirs) (median of {bench.runs})",
            "ms",
            True,
            lambda impl, a=rk_args: b.measure_startup(impl, a, bench.runs),
        )
    sub.measure(
        "pasta",
        f"host->child via implicit port, sandbox on / off (median of {b.IPERF_ROUNDS})",
        "Gbit/s",
        False,
        measure_host_to_child,
        rounds=b.IPERF_ROUNDS,
    )
    bench.rows.extend(sub.rows)


SECTIONS = {"pasta": section_pasta}
