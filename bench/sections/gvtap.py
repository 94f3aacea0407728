"""--net=gvisor-tap-vsock (rk-gvtap, the userspace stack with a NAT):
start-up, iperf3 child->host at MTU 1500 and 65520 through the gateway
mapping (IPv4, and IPv6 with --ipv6 to the host's ::1), the driver's CPU
seconds per gigabit moved, and its resident memory, idle and with 1000 TCP
connections open.

The mark is the kernel itself: a rootful veth pair. For each MTU, rounds
alternate between rk-gvtap (as shipped, with `--net-opt offload=false`,
and with `--net-opt pin-cpu=false`) and iperf3 over a veth pair root makes for the run (a
network namespace of its own, 10.199.0.2 -> 10.199.0.1, the host end of the
pair; nothing else is reached), and ratio rows give gvtap / veth. Both
also get the whole machine's CPU time per gigabit (every CPU's non-idle
time from /proc/stat while iperf3 ran, so anything else running counts
too): on a machine with few CPUs that, not the driver alone, caps what a
userspace stack can reach.

RootlessKit 2.0.2 as Debian builds it has no gvisor-tap-vsock driver
("unknown network mode"), so "theirs" shows n/a in those rows. The
comparison that matters is with slirp4netns, the driver a user would
otherwise pick: each MTU is also measured with our slirp4netns (and theirs)
in the same run, and a ratio row gives ours gvtap / ours slirp4netns.

All traffic goes to the host's 127.0.0.1 (or ::1): the iperf3 server and
the connection holder listen there, and the client inside reaches them as
the gateway 10.0.2.1 or fd00::1 (slirp4netns: 10.0.2.2).
"""

import os
import socket
import statistics
import subprocess
import threading
import time

import bench as b

GVTAP = ["--net=gvisor-tap-vsock"]
ROUNDS = int(os.environ.get("RK_BENCH_IPERF_ROUNDS", "3"))
FLOWS = 1000
NOT_APPLICABLE = "n/a: "
NO_DRIVER = NOT_APPLICABLE + "RootlessKit 2.0.2 (Debian's build) has no gvisor-tap-vsock driver"


def _probe_driver(impl):
    r = subprocess.run(
        b.as_user([impl.rootlesskit, *GVTAP, "--", "true"]),
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=b.RUN_TIMEOUT,
    )
    if "unknown network mode" in r.stderr:
        raise b.MeasureError(NO_DRIVER)


def _measure(bench, metric, unit, lower_is_better, fn, rounds=1):
    """bench.measure; an implementation that has no such row (it raised
    MeasureError(NOT_APPLICABLE...)) shows "n/a" instead of a failure."""
    if rounds > 1:
        row = bench.measure("gvtap", metric, unit, lower_is_better, fn, rounds=rounds)
    else:
        row = bench.measure("gvtap", metric, unit, lower_is_better, fn)
    for name, err in list(row.errors.items()):
        if err.startswith(NOT_APPLICABLE):
            del row.errors[name]
    return row


class Holder:
    """Accepts connections on the host's 127.0.0.1 and keeps them open."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                continue

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=2)
        for c in self.conns:
            c.close()
        self.sock.close()


HOLD_SCRIPT = r"""
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection((host, port), timeout=20) for _ in range(n)]
for s in socks:
    s.sendall(b'x' * 1024)
print('open', len(socks), flush=True)
time.sleep(60)
"""


def rss_with_flows(impl):
    """VmRSS (KiB) of the driver while FLOWS TCP connections are open."""
    _probe_driver(impl)
    with Holder() as holder:
        argv = [
            impl.rootlesskit,
            *GVTAP,
            "--",
            "python3",
            "-c",
            HOLD_SCRIPT,
            "10.0.2.1",
            str(holder.port),
            str(FLOWS),
        ]
        proc = b.spawn_user(argv, stdout=subprocess.PIPE, text=True)
        try:
            line = ""
            deadline = time.monotonic() + 60
            while "open" not in line and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    raise b.MeasureError(f"exited {proc.returncode}:\n{b.tail(proc.stderr.read())}")
            if f"open {FLOWS}" not in line:
                raise b.MeasureError(f"the {FLOWS} connections did not open: {line!r}")
            time.sleep(1.0)
            for pid in b.descendants(proc.pid):
                st = b.proc_status(pid)
                if st and st.get("Name") == "rk-gvtap":
                    kib = int(st["VmRSS"].split()[0])
                    b.log(f"  rk-gvtap pid {pid}: {kib / 1024:.1f} MiB with {len(holder.conns)} host connections")
                    return float(kib)
            raise b.MeasureError("no rk-gvtap process in the tree")
        finally:
            b.kill_tree(proc.pid, proc)


class ForwardingCpu:
    """CPU seconds used, while it runs, by everything under ROOT but the
    iperf3 server: the driver, the core and the port driver's relay
    processes, which may start and end with the connection. /proc is read
    every 50 ms: a process that ends loses at most its last 50 ms."""

    def __init__(self, root):
        self.root = root
        self.first, self.last = {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, baseline):
        for pid in b.descendants(self.root):
            st = b.proc_status(pid)
            if not st or st.get("Name") == "iperf3":
                continue
            cpu = _cpu_seconds(pid)
            if cpu is None:
                continue
            # A process first seen after the start began at zero.
            self.first.setdefault(pid, cpu if baseline else 0.0)
            self.last[pid] = cpu

    def _run(self):
        while not self.stop.wait(0.05):
            self._sample(False)

    def __enter__(self):
        self._sample(True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._sample(False)

    def seconds(self):
        return sum(self.last[p] - self.first[p] for p in self.last)


def host_to_child(impl, port_driver):
    """iperf3 host->child through a forwarded port: the server inside, the
    client on the host connecting to 127.0.0.1. Returns (bits per second,
    CPU seconds the forwarding processes used while the client ran)."""
    _probe_driver(impl)
    port = b.free_loopback_port()
    argv = [
        impl.rootlesskit,
        *GVTAP,
        "--disable-host-loopback",
        f"--port-driver={port_driver}",
        f"--publish=127.0.0.1:{port}:{port}/tcp",
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
                raise b.MeasureError(f"exited {proc.returncode} early:\n{b.tail(proc.stderr.read().decode(errors='replace'))}")
            if time.monotonic() > deadline:
                raise b.MeasureError(f"127.0.0.1:{port} was not forwarded within {b.STARTUP_WAIT}s")
            time.sleep(0.05)
        time.sleep(0.5)  # iperf3 inside starts listening after the port is published
        with ForwardingCpu(proc.pid) as cpu:
            r = b.iperf_client(port)
        try:
            import json

            bps = float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])
        except (ValueError, KeyError) as e:
            raise b.MeasureError(f"iperf3 client failed ({e}):\n{b.tail(r.stdout)}{b.tail(r.stderr)}")
        return bps, cpu.seconds()
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                b.kill_tree(proc.pid, proc)


PORT_DRIVERS = ("gvisor-tap-vsock", "builtin")


def host_to_child_rounds(impl):
    """ROUNDS alternating runs of host->child through each port driver;
    returns the medians of throughput and of forwarding CPU per Gbit."""
    samples = {f"{pd} {k}": [] for pd in PORT_DRIVERS for k in ("bps", "cpu")}
    for r in range(ROUNDS):
        b.log(f"  host->child round {r + 1}/{ROUNDS}")
        for pd in PORT_DRIVERS:
            bps, cpu = host_to_child(impl, pd)
            samples[f"{pd} bps"].append(bps)
            # CPU milliseconds of the forwarding processes per gigabit moved.
            samples[f"{pd} cpu"].append(1000 * cpu / (bps * b.IPERF_SECONDS / 1e9))
    for k, v in samples.items():
        unit, scale = ("ms/Gbit", 1) if k.endswith("cpu") else ("Gbit/s", 1e9)
        b.log(f"  {k}: " + " ".join(f"{x / scale:.2f}" for x in v) + f" {unit}")
    return {k: statistics.median(v) for k, v in samples.items()}


def driver_rss_idle(impl):
    _probe_driver(impl)
    total, procs = b.measure_rss(impl, GVTAP, set())
    driver = [kib for _, comm, kib, _, _ in procs if comm == "rk-gvtap"]
    for pid, comm, kib, counted, cmd in procs:
        mark = "+" if counted else " "
        b.log(f"  {mark} {impl.name:6} pid {pid:<7} {comm:16} {kib / 1024:7.1f} MiB  {cmd[:100]}")
    if not driver:
        raise b.MeasureError("no rk-gvtap process in the tree")
    return float(driver[0])


def _cpu_seconds(pid):
    """utime + stime of PID (all its threads), in seconds; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _find_driver(root):
    """The pid of the rk-gvtap under `root` (the topmost, should there be
    more), looking again for up to a second: once in a bench run a single
    look found none."""
    for _ in range(20):
        for pid in b.descendants(root):
            if (b.proc_status(pid) or {}).get("Name") == "rk-gvtap":
                return pid
        time.sleep(0.05)
    return None


def _machine_busy_seconds():
    """CPU seconds every CPU of the machine has spent not idle so far."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def iperf_with_cpu(impl, rk_args, ipv6=False):
    """iperf3 child->host through rk-gvtap (server as root on the host's
    127.0.0.1, or ::1 with `ipv6`; the client inside sends to the gateway
    for IPERF_SECONDS). Returns (bits per second, CPU seconds the driver
    used while the client ran, CPU seconds the whole machine used then)."""
    server, port = b.start_iperf_server("::1" if ipv6 else "127.0.0.1")
    gateway = "fd00::1" if ipv6 else "10.0.2.1"
    extra = ["--ipv6"] if ipv6 else []
    script = (
        f"echo START; iperf3 -c {gateway} -p {port} -t {b.IPERF_SECONDS} -J > \"$T/iperf.json\"; "
        "echo END; cat \"$T/iperf.json\""
    )
    try:
        argv = [impl.rootlesskit, *GVTAP, *extra, *rk_args, "--", "sh", "-c", f'T=$(mktemp -d); {script}; rm -rf "$T"']
        proc = b.spawn_user(argv, stdout=subprocess.PIPE, text=True)
        try:
            driver, cpu0, cpu1, out = None, None, None, []
            deadline = time.monotonic() + b.IPERF_SECONDS + b.RUN_TIMEOUT
            for line in proc.stdout:
                if time.monotonic() > deadline:
                    raise b.MeasureError("iperf3 did not finish in time")
                if line.startswith("START"):
                    driver = _find_driver(proc.pid)
                    cpu0 = _cpu_seconds(driver) if driver else None
                    machine0 = _machine_busy_seconds()
                elif line.startswith("END"):
                    cpu1 = _cpu_seconds(driver) if driver else None
                    machine1 = _machine_busy_seconds()
                else:
                    out.append(line)
            proc.wait(timeout=b.RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                b.kill_tree(proc.pid, proc)
        try:
            import json

            bps = float(json.loads("".join(out))["end"]["sum_received"]["bits_per_second"])
        except (ValueError, KeyError) as e:
            raise b.MeasureError(f"iperf3 failed ({e}):\n{b.tail(''.join(out))}{b.tail(proc.stderr.read())}")
        if cpu0 is None or cpu1 is None:
            found = f"rk-gvtap pid {driver} gone by the end" if driver else "no rk-gvtap process at the start"
            raise b.MeasureError(f"{found}, no CPU times (exit {proc.returncode}):\n{b.tail(proc.stderr.read())}")
        return bps, cpu1 - cpu0, machine1 - machine0
    finally:
        b.stop_iperf_server(server)


VETH_NETNS = "rk-bench-gvveth"
VETH_HOST, VETH_NS = "rkbgv0", "rkbgv1"
VETH_HOST_IP, VETH_NS_IP = "10.199.0.1", "10.199.0.2"


def _root(*argv, check=True):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=check)


class Veth:
    """A veth pair root makes for the run: one end in a network namespace
    of its own, the other in the host's, nothing else attached."""

    def __enter__(self):
        self.__exit__()
        try:
            _root("ip", "netns", "add", VETH_NETNS)
            _root("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
            _root("ip", "link", "set", VETH_NS, "netns", VETH_NETNS)
            _root("ip", "addr", "add", f"{VETH_HOST_IP}/24", "dev", VETH_HOST)
            _root("ip", "link", "set", VETH_HOST, "up")
            inside = ["ip", "netns", "exec", VETH_NETNS]
            _root(*inside, "ip", "link", "set", "lo", "up")
            _root(*inside, "ip", "addr", "add", f"{VETH_NS_IP}/24", "dev", VETH_NS)
            _root(*inside, "ip", "link", "set", VETH_NS, "up")
        except subprocess.CalledProcessError as e:
            self.__exit__()
            raise b.MeasureError(f"setting up the rootful veth: {' '.join(e.cmd)}: {e.stderr.strip()}")
        return self

    def __exit__(self, *exc):
        _root("ip", "link", "del", VETH_HOST, check=False)
        _root("ip", "netns", "del", VETH_NETNS, check=False)

    def iperf(self, mtu):
        """iperf3 from the namespace's end to the host's end at `mtu`:
        (bits per second, CPU seconds the whole machine used meanwhile)."""
        _root("ip", "link", "set", VETH_HOST, "mtu", str(mtu))
        _root("ip", "netns", "exec", VETH_NETNS, "ip", "link", "set", VETH_NS, "mtu", str(mtu))
        port = b.free_loopback_port()
        server = subprocess.Popen(
            ["iperf3", "-s", "-B", VETH_HOST_IP, "-1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 5
            while not b.host_listening(port):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise b.MeasureError(f"iperf3 server did not listen on {VETH_HOST_IP}:{port}")
                time.sleep(0.05)
            machine0 = _machine_busy_seconds()
            r = b.iperf_client(port, VETH_HOST_IP, prefix=("ip", "netns", "exec", VETH_NETNS))
            machine = _machine_busy_seconds() - machine0
            try:
                import json

                return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]), machine
            except (ValueError, KeyError) as e:
                raise b.MeasureError(f"iperf3 over the veth failed ({e}):\n{b.tail(r.stdout)}{b.tail(r.stderr)}")
        finally:
            b.stop_iperf_server(server)


def against_veth(impl, mtu):
    """ROUNDS alternating runs of rk-gvtap (offloads on and off) and the
    rootful veth at `mtu`; returns the medians as a dict."""
    _probe_driver(impl)
    samples = {
        "gvtap": [],
        "gvtap-no-offload": [],
        "gvtap-no-pin": [],
        "gvtap-ipv6": [],
        "veth": [],
        "cpu-per-gbit": [],
        "machine-cpu-per-gbit": [],
        "veth-machine-cpu-per-gbit": [],
    }

    def per_gbit(seconds, bps):
        """CPU milliseconds per gigabit moved in an IPERF_SECONDS run."""
        return 1000 * seconds / (bps * b.IPERF_SECONDS / 1e9)

    with Veth() as veth:
        for r in range(ROUNDS):
            b.log(f"  round {r + 1}/{ROUNDS} at MTU {mtu}")
            vbps, vmachine = veth.iperf(mtu)
            samples["veth"].append(vbps)
            samples["veth-machine-cpu-per-gbit"].append(per_gbit(vmachine, vbps))
            bps, cpu, machine = iperf_with_cpu(impl, [f"--mtu={mtu}"])
            samples["gvtap"].append(bps)
            samples["cpu-per-gbit"].append(per_gbit(cpu, bps))
            samples["machine-cpu-per-gbit"].append(per_gbit(machine, bps))
            samples["gvtap-no-offload"].append(iperf_with_cpu(impl, [f"--mtu={mtu}", "--net-opt", "offload=false"])[0])
            samples["gvtap-no-pin"].append(iperf_with_cpu(impl, [f"--mtu={mtu}", "--net-opt", "pin-cpu=false"])[0])
            samples["gvtap-ipv6"].append(iperf_with_cpu(impl, [f"--mtu={mtu}"], ipv6=True)[0])
    for k, v in samples.items():
        unit = "ms/Gbit" if k.endswith("cpu-per-gbit") else "Gbit/s"
        scale = 1 if k.endswith("cpu-per-gbit") else 1e9
        b.log(f"  {k}: " + " ".join(f"{x / scale:.2f}" for x in v) + f" {unit}")
    return {k: statistics.median(v) for k, v in samples.items()}


def section_gvtap(bench):
    def startup(impl):
        _probe_driver(impl)
        return b.measure_startup(impl, [*GVTAP, "--disable-host-loopback"], bench.runs)

    _measure(bench, f"--net=gvisor-tap-vsock --disable-host-loopback true (median of {bench.runs})", "ms", True, startup)

    for mtu in (1500, 65520):

        def gvtap(impl, m=mtu):
            _probe_driver(impl)
            return b.measure_iperf(impl, [*GVTAP, f"--mtu={m}"], "10.0.2.1")

        def slirp(impl, m=mtu):
            return b.measure_iperf(impl, ["--net=slirp4netns", f"--mtu={m}"], "10.0.2.2")

        g = _measure(bench, f"gvisor-tap-vsock child->host MTU {mtu} (median of {ROUNDS})", "Gbit/s", False, gvtap, ROUNDS)
        s = _measure(bench, f"slirp4netns child->host MTU {mtu}, same run (median of {ROUNDS})", "Gbit/s", False, slirp, ROUNDS)

        def ratio(impl, g=g, s=s):
            gv, sv = g.values.get(impl.name), s.values.get(impl.name)
            if gv is None or not sv:
                raise b.MeasureError(g.errors.get(impl.name) or s.errors.get(impl.name) or NO_DRIVER)
            return gv / sv

        _measure(bench, f"gvisor-tap-vsock / slirp4netns child->host MTU {mtu}", "x", False, ratio)

    for mtu in (1500, 65520):
        pairs = {}

        def paired(impl, key, m=mtu, pairs=pairs):
            return b.memo(pairs, impl, lambda i: against_veth(i, m))[key]

        label = f"child->host MTU {mtu}, alternating rounds (median of {ROUNDS})"
        g = _measure(bench, f"gvisor-tap-vsock {label}", "Gbit/s", False, lambda i: paired(i, "gvtap"))
        n = _measure(bench, f"gvisor-tap-vsock offload=false {label}", "Gbit/s", False, lambda i: paired(i, "gvtap-no-offload"))
        u = _measure(bench, f"gvisor-tap-vsock pin-cpu=false {label}", "Gbit/s", False, lambda i: paired(i, "gvtap-no-pin"))
        _measure(bench, f"gvisor-tap-vsock --ipv6 (fd00::1 -> ::1) {label}", "Gbit/s", False, lambda i: paired(i, "gvtap-ipv6"))
        _measure(bench, f"rk-gvtap CPU time per Gbit moved, {label}", "ms/Gbit", True, lambda i: paired(i, "cpu-per-gbit"))
        _measure(bench, f"whole machine's CPU time per Gbit, gvisor-tap-vsock {label}", "ms/Gbit", True, lambda i: paired(i, "machine-cpu-per-gbit"))
        v = _measure(bench, f"rootful veth {label}", "Gbit/s", False, lambda i: paired(i, "veth"))
        _measure(bench, f"whole machine's CPU time per Gbit, rootful veth {label}", "ms/Gbit", True, lambda i: paired(i, "veth-machine-cpu-per-gbit"))
        for name, row in (("gvisor-tap-vsock", g), ("offload=false", n), ("pin-cpu=false", u)):

            def ratio(impl, row=row, v=v):
                gv, vv = row.values.get(impl.name), v.values.get(impl.name)
                if gv is None or not vv:
                    raise b.MeasureError(row.errors.get(impl.name) or v.errors.get(impl.name) or NO_DRIVER)
                return 100 * gv / vv

            _measure(bench, f"{name} / rootful veth child->host MTU {mtu} (target >= 80 %)", "%", False, ratio)

    rounds = {}

    def forwarded(impl, key):
        return b.memo(rounds, impl, host_to_child_rounds)[key]

    label = f"alternating rounds (median of {ROUNDS})"
    rows = {}
    for pd in PORT_DRIVERS:
        rows[pd] = _measure(bench, f"host->child via --port-driver={pd}, {label}", "Gbit/s", False, lambda impl, pd=pd: forwarded(impl, f"{pd} bps"))
        _measure(
            bench,
            f"forwarding CPU time per Gbit, --port-driver={pd}, {label}",
            "ms/Gbit",
            True,
            lambda impl, pd=pd: forwarded(impl, f"{pd} cpu"),
        )

    def port_ratio(impl):
        g, bi = rows["gvisor-tap-vsock"].values.get(impl.name), rows["builtin"].values.get(impl.name)
        if g is None or not bi:
            raise b.MeasureError(rows["gvisor-tap-vsock"].errors.get(impl.name) or rows["builtin"].errors.get(impl.name) or NO_DRIVER)
        return g / bi

    _measure(bench, "host->child gvisor-tap-vsock / builtin port driver (target >= 1.0)", "x", False, port_ratio)

    _measure(bench, "rk-gvtap RSS, idle", "MiB", True, driver_rss_idle)
    _measure(bench, f"rk-gvtap RSS with {FLOWS} TCP connections open", "MiB", True, rss_with_flows)


SECTIONS = {"gvtap": section_gvtap}
