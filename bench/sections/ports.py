"""Port forwarding: iperf3 host->child through each port driver, side by
side with RootlessKit 2.0.2's builtin and slirp4netns port drivers.

The iperf3 server runs inside `rootlesskit --port-driver=D -p
127.0.0.1:HOSTPORT:5201/tcp`; the client, on the host as root, connects to
127.0.0.1:HOSTPORT for IPERF_SECONDS. `implicit` (pasta) is measured in
pasta.py. Targets: builtin >= 1.0x RootlessKit's builtin.
"""

import json
import os
import subprocess
import tempfile
import time

import bench as b

INSIDE_PORT = 5201
NOT_APPLICABLE = "n/a: RootlessKit 2.0.2 allows only the none and implicit port drivers with pasta"
SLIRP = ["--net=slirp4netns", "--disable-host-loopback", "--copy-up=/etc", "--mtu=65520"]


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
    host_port = b.free_loopback_port()
    state = tempfile.mkdtemp(prefix="rk-bench-ports-")
    os.chmod(state, 0o777)
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
            r = subprocess.run(
                ["iperf3", "-c", "127.0.0.1", "-p", str(host_port), "-t", str(b.IPERF_SECONDS), "-J"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=b.IPERF_SECONDS + b.RUN_TIMEOUT,
            )
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


SECTIONS = {"ports": section_ports}
