"""Port forwarding: iperf3 host->child through each port driver, side by
side with RootlessKit 2.0.2's builtin and slirp4netns port drivers.

The iperf3 server runs inside `rootlesskit --port-driver=D -p
127.0.0.1:HOSTPORT:5201/tcp`; the client, on the host as root, connects to
127.0.0.1:HOSTPORT for IPERF_SECONDS. `implicit` (pasta) is measured in
pasta.py. Targets: builtin >= 1.0x RootlessKit's builtin.

Also the REST API's answer time for its owner while other clients hold 64
idle and 16 trickling connections (docs/port-forwarding.md, "Serving the
owner whatever other clients do").
"""

import json
import os
import socket
import statistics
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import bench as b

INSIDE_PORT = 5201
NOT_APPLICABLE = "n/a: RootlessKit 2.0.2 allows only the none and implicit port drivers with pasta"
SLIRP = ["--net=slirp4netns", "--disable-host-loopback", "--copy-up=/etc", "--mtu=65520"]


RELAY = "rootlesskit-port-builtin"


def _ours_build_dir():
    """Where our binaries come from: --ours-bin, else the release build."""
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--ours-bin" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--ours-bin="):
            return Path(a.split("=", 1)[1])
    triple = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
    triple = next(l.split()[1] for l in triple.splitlines() if l.startswith("host:"))
    return b.REPO / "target" / triple / "release"


def ensure_relay(impl):
    """Ours needs its builtin relay beside rootlesskit (discovery finds it
    there); bench.py copies the rk-* drivers only."""
    if impl.name != "ours" or (impl.bin_dir / RELAY).is_file():
        return
    src = _ours_build_dir() / RELAY
    if not src.is_file():
        raise b.MeasureError(f"no {src}: build it (scripts/build-release)")
    b.copy_bins([src], impl.bin_dir)


def _cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def _own_processes(root):
    """rootlesskit's own processes: the tree without iperf3 and the network
    programs (slirp4netns, pasta and their drivers)."""
    skip = ("iperf3", "slirp4netns", "rk-slirp4netns", "pasta", "rk-pasta", "passt")
    pids = b.descendants(root)
    return [p for p in pids if (b.proc_status(p) or {}).get("Name") not in skip]


def measure_forward(impl, rk_args, cpu=False):
    """Bits per second received inside, host->child through the forward;
    with cpu=True, the CPU seconds rootlesskit's own processes spent per GB."""
    ensure_relay(impl)
    host_port = b.free_loopback_port()
    state = tempfile.mkdtemp(prefix="rk-bench-ports-")
    os.chmod(state, 0o1777)
    argv = b.as_user(
        [
            impl.rootlesskit,
            f"--state-dir={state}/s",
            "--pidns",
            *rk_args,
            f"--publish=127.0.0.1:{host_port}:{INSIDE_PORT}/tcp",
            "--",
            "iperf3",
            "-s",
            "-p",
            str(INSIDE_PORT),
        ]
    )
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise b.MeasureError(f"rootlesskit exited: {b.tail(proc.stderr.read().decode())}")
            own = _own_processes(proc.pid)
            before = _cpu_ticks(own)
            r = b.iperf_client(host_port)
            try:
                result = json.loads(r.stdout)
                if "error" not in result:
                    received = result["end"]["sum_received"]
                    if cpu:
                        used = (_cpu_ticks(own) - before) / os.sysconf("SC_CLK_TCK")
                        return used / (float(received["bytes"]) / 1e9)
                    return float(received["bits_per_second"])
                last = result["error"]
            except (ValueError, KeyError) as e:
                last = f"{e}: {b.tail(r.stdout)}"
            time.sleep(0.2)
        raise b.MeasureError(f"iperf3 through the forward failed: {last}")
    finally:
        b.kill_tree(proc.pid, proc)


ATTACK_IDLE = 64
ATTACK_TRICKLE = 16
API_CALLS = 20
TRICKLED = b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n"


def _hostile(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    return s


def _tick(conns, path, trickle, n):
    """Sends a byte on each trickling connection; reopens closed ones."""
    for i, s in enumerate(conns):
        try:
            data = s.recv(4096)
            closed = data == b""
        except BlockingIOError:
            closed = False
        except OSError:
            closed = True
        if not closed and i in trickle:
            try:
                s.send(TRICKLED[n % len(TRICKLED) : n % len(TRICKLED) + 1])
            except BlockingIOError:
                pass
            except OSError:
                closed = True
        if closed:
            s.close()
            conns[i] = _hostile(path)


def _api_call(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(path)
        c.sendall(b"GET /v1/ports HTTP/1.1\r\nHost: rootlesskit\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200 "):
        raise b.MeasureError(f"the API answered {answer[:80]!r}")


def measure_api_under_attack(impl):
    """Median milliseconds of the owner's GET /v1/ports (a new connection
    each) while 64 idle and 16 trickling connections are held and reopened."""
    ensure_relay(impl)
    state = tempfile.mkdtemp(prefix="rk-bench-api-")
    os.chmod(state, 0o1777)
    argv = b.as_user(
        [impl.rootlesskit, f"--state-dir={state}/s", "--pidns", *SLIRP, "--port-driver=builtin", "--", "sleep", "120"]
    )
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    path = f"{state}/s/api.sock"
    conns = []
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise b.MeasureError(f"rootlesskit exited: {b.tail(proc.stderr.read().decode())}")
            try:
                _api_call(path)
                break
            except (OSError, b.MeasureError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        conns = [_hostile(path) for _ in range(ATTACK_IDLE + ATTACK_TRICKLE)]
        trickle = set(range(ATTACK_IDLE, ATTACK_IDLE + ATTACK_TRICKLE))
        times = []
        for n in range(API_CALLS):
            _tick(conns, path, trickle, n)
            started = time.monotonic()
            try:
                _api_call(path)
            except OSError as e:
                raise b.MeasureError(f"the owner's call {n} failed: {e}")
            times.append((time.monotonic() - started) * 1e3)
            time.sleep(0.1)
        return statistics.median(times)
    finally:
        for s in conns:
            s.close()
        b.kill_tree(proc.pid, proc)


def section_ports(bench):
    for label, args in [
        ("builtin (slirp4netns net)", SLIRP + ["--port-driver=builtin"]),
        ("slirp4netns port driver", SLIRP + ["--port-driver=slirp4netns"]),
    ]:
        bench.measure(
            "ports",
            f"iperf3 host->child, {label}",
            "Gbit/s",
            False,
            lambda impl, a=args: measure_forward(impl, a),
            rounds=3,
        )
    bench.measure(
        "ports",
        "rootlesskit CPU per GB forwarded, builtin",
        "s/GB",
        True,
        lambda impl: measure_forward(impl, SLIRP + ["--port-driver=builtin"], cpu=True),
        rounds=3,
    )
    # RootlessKit 2.0.2 refuses builtin with pasta ("n/a"); ours takes it.
    def builtin_on_pasta(impl):
        if impl.name == "theirs":
            raise b.MeasureError(NOT_APPLICABLE)
        return measure_forward(
            impl, ["--net=pasta", "--disable-host-loopback", "--copy-up=/etc", "--port-driver=builtin"]
        )

    row = bench.measure("ports", "iperf3 host->child, builtin (pasta net)", "Gbit/s", False, builtin_on_pasta)
    row.errors.pop("theirs", None)
    bench.measure(
        "ports",
        f"API call with {ATTACK_IDLE} idle + {ATTACK_TRICKLE} trickling clients",
        "ms",
        True,
        measure_api_under_attack,
        rounds=3,
    )


SECTIONS = {"ports": section_ports}
