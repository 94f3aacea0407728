"""--net=lxc-user-nic on lxc-net's lxcbr0 (10.0.3.1/24, dnsmasq): start-up,
iperf3 child->bridge, resident memory, and what many runs leave in dnsmasq's
lease table. Side by side with RootlessKit 2.0.2's lxc-user-nic driver, and
a rootful veth into the same bridge as the ceiling for throughput.

Traffic goes only to 10.0.3.1 (lxc-net NATs lxcbr0 to the outside; nothing
here targets anything beyond it): the iperf3 server runs as root bound to
10.0.3.1, the client inside the namespace.

RootlessKit takes a new random MAC, so a new address, every run, and
releases no lease: each run leaves one behind (they expire after lxc-net's
lease time, 1 h), so its start-up is timed over a few runs only, and the
lease-table check runs it LEASE_RUNS_THEIRS times against our LEASE_RUNS.
dnsmasq pings every address it has not handed out before (3 s), except when
it already pinged six times in the last 30 s: back-to-back runs mostly skip
the ping, a run after a quiet half minute does not. Both are measured.
"""

import json
import os
import subprocess
import time

import bench as b

BRIDGE = "lxcbr0"
BRIDGE_IP = "10.0.3.1"
LEASES = "/var/lib/misc/dnsmasq.lxcbr0.leases"
NET = ["--net=lxc-user-nic"]
# RootlessKit leaks a lease per run (see above): keep its runs few.
STARTUP_RUNS_MAX = 11
LEASE_RUNS = 200
LEASE_RUNS_THEIRS = 3
CEILING_NETNS = "rk-bench-veth"


def _listening(ip, port):
    """Whether ip:port is in LISTEN state (from /proc: a probing connection
    would use up iperf3's one-off server)."""
    want = "".join(f"{int(o):02X}" for o in reversed(ip.split("."))) + f":{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            return any(
                l.split()[1] == want and l.split()[3] == "0A" for l in f
            )
    except OSError:
        return False


class IperfServer:
    """A one-off iperf3 server as root, bound to the bridge's address."""

    def __enter__(self):
        self.port = b.free_loopback_port()
        self.proc = subprocess.Popen(
            ["iperf3", "-s", "-B", BRIDGE_IP, "-1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 5
        while not _listening(BRIDGE_IP, self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise b.MeasureError(f"iperf3 server did not listen on {BRIDGE_IP}:{self.port}")
            time.sleep(0.05)
        return self

    def client_argv(self):
        return ["iperf3", "-c", BRIDGE_IP, "-p", str(self.port), "-t", str(b.IPERF_SECONDS), "-J"]

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


def _bits_per_second(stdout, stderr, what):
    try:
        return float(json.loads(stdout)["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError) as e:
        raise b.MeasureError(f"cannot parse iperf3 -J output of {what} ({e}):\n{b.tail(stdout)}{b.tail(stderr)}")


def iperf_child_to_bridge(impl):
    with IperfServer() as srv:
        argv = [impl.rootlesskit, *NET, "--", *srv.client_argv()]
        r = b.run_user(argv, timeout=b.IPERF_SECONDS + b.RUN_TIMEOUT)
        return _bits_per_second(r.stdout, r.stderr, " ".join(argv))


def _root(*argv, check=True):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=check)


def _free_bridge_address():
    """An address of lxcbr0's DHCP range that no lease holds, for the rootful
    veth (dnsmasq pings an address before it hands it out, so it would not
    give this one away while the measurement runs)."""
    try:
        with open(LEASES) as f:
            leased = {l.split()[2] for l in f if len(l.split()) > 2}
    except OSError:
        leased = set()
    for host in range(254, 200, -1):
        a = f"10.0.3.{host}"
        if a not in leased:
            return a
    raise b.MeasureError("no free address in 10.0.3.201-254 for the rootful veth")


def iperf_rootful_veth(_impl):
    """The ceiling: root's own netns with a veth into lxcbr0, nothing else."""
    host_end, ns_end = "rkbv0", "rkbv1"
    address = _free_bridge_address()
    _root("ip", "netns", "del", CEILING_NETNS, check=False)
    _root("ip", "link", "del", host_end, check=False)
    try:
        _root("ip", "netns", "add", CEILING_NETNS)
        _root("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _root("ip", "link", "set", ns_end, "netns", CEILING_NETNS)
        _root("ip", "link", "set", host_end, "master", BRIDGE, "up")
        inside = ["ip", "netns", "exec", CEILING_NETNS]
        _root(*inside, "ip", "link", "set", "lo", "up")
        _root(*inside, "ip", "addr", "add", f"{address}/24", "dev", ns_end)
        _root(*inside, "ip", "link", "set", ns_end, "up")
        with IperfServer() as srv:
            try:
                r = subprocess.run(
                    [*inside, *srv.client_argv()],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=b.IPERF_SECONDS + b.RUN_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                raise b.MeasureError("iperf3 over the rootful veth timed out")
            return _bits_per_second(r.stdout, r.stderr, "the rootful veth")
    except subprocess.CalledProcessError as e:
        raise b.MeasureError(f"setting up the rootful veth: {' '.join(e.cmd)}: {e.stderr.strip()}")
    finally:
        _root("ip", "link", "del", host_end, check=False)
        _root("ip", "netns", "del", CEILING_NETNS, check=False)


def _lease_count():
    try:
        with open(LEASES) as f:
            return sum(1 for l in f if l.strip())
    except OSError:
        return 0


def _our_veths():
    uid = subprocess.run(["id", "-u", b.TEST_USER], capture_output=True, text=True).stdout.strip()
    try:
        return [n for n in os.listdir(f"/sys/class/net/{BRIDGE}/brif") if n.startswith(f"veth{uid}_")]
    except OSError:
        return []


def leases_added_per_run(runs_by_impl):
    def f(impl):
        runs = runs_by_impl[impl.name]
        before = _lease_count()
        loop = (
            "import subprocess, sys, json\n"
            "argv = json.loads(sys.argv[1])\n"
            "for i in range(int(sys.argv[2])):\n"
            "    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)\n"
            "    if r.returncode != 0:\n"
            "        sys.exit(f'run {i}: exit {r.returncode}: {r.stderr.strip()}')\n"
        )
        argv = [impl.rootlesskit, *NET, "true"]
        b.run_user(["python3", "-c", loop, json.dumps(argv), str(runs)], timeout=runs * 10 + b.RUN_TIMEOUT)
        deadline = time.monotonic() + 5
        while _our_veths() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _our_veths()
        if left:
            raise b.MeasureError(f"{len(left)} veths of the test user left on {BRIDGE}: {left}")
        added = _lease_count() - before
        b.log(f"  {impl.name}: {runs} runs, lease table {before} -> {before + added}, no veth left")
        return added / runs

    return f


USERNET = "/etc/lxc/lxc-usernet"
CONCURRENT = 30


def concurrent_first_runs(impl):
    """CONCURRENT runs started at once, each with a new random MAC (so no
    remembered address): dnsmasq pings every new address for 3 s, one at a
    time, and the runs queue up behind it. Seconds until the last one is
    done; every run must succeed. The test user's lxc-usernet quota is
    raised for the measurement."""
    if impl.name != "ours":
        raise b.MeasureError(
            f"not run: RootlessKit 2.0.2 releases no lease, so this would leave {CONCURRENT} "
            "in lxc-net's pool for an hour"
        )
    with open(USERNET) as f:
        original = f.read()
    with open(USERNET, "a") as f:
        if original and not original.endswith("\n"):
            f.write("\n")
        f.write(f"{b.TEST_USER} veth {BRIDGE} {CONCURRENT}\n")
    argv = b.as_user([impl.rootlesskit, *NET, "--net-opt", "lxc-user-nic-mac=random", "true"])
    failures = []
    try:
        start = time.monotonic()
        procs = [
            subprocess.Popen(
                argv,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for _ in range(CONCURRENT)
        ]
        for p in procs:
            try:
                _, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
                err += "\n(timed out after 120 s)"
            if p.returncode != 0:
                failures.append(err)
        took = time.monotonic() - start
    finally:
        with open(USERNET, "w") as f:
            f.write(original)
    if failures:
        raise b.MeasureError(f"{len(failures)} of {CONCURRENT} runs failed, e.g.:\n{b.tail(failures[0])}")
    b.log(f"  {impl.name}: all {CONCURRENT} runs got a lease in {took:.1f} s")
    return took


# dnsmasq forgets its pings after 30 s (PING_CACHE_TIME).
QUIET_SECONDS = 31


def cold_start(impl):
    """One `rootlesskit --net=lxc-user-nic true` after half a minute without
    DHCP traffic from these runs, wall time in ms (setpriv included)."""
    b.check_runs_in_userns(impl, NET)
    b.log(f"  waiting {QUIET_SECONDS}s for dnsmasq to forget its pings")
    time.sleep(QUIET_SECONDS)
    t = time.perf_counter()
    b.run_user([impl.rootlesskit, *NET, "true"])
    return (time.perf_counter() - t) * 1000.0


def section_lxc_user_nic(bench):
    bench.measure(
        "lxc-user-nic",
        f"--net=lxc-user-nic true after {QUIET_SECONDS}s quiet (one run)",
        "ms",
        True,
        cold_start,
    )
    runs = min(bench.runs, STARTUP_RUNS_MAX)
    bench.measure(
        "lxc-user-nic",
        f"--net=lxc-user-nic true back to back (median of {runs})",
        "ms",
        True,
        lambda impl: b.measure_startup(impl, NET, runs),
    )

    def rss(impl):
        total, procs = b.measure_rss(impl, NET, set())
        for pid, comm, kib, counted, cmd in procs:
            mark = "+" if counted else " "
            b.log(f"  {mark} {impl.name:6} pid {pid:<7} {comm:16} {kib / 1024:7.1f} MiB  {cmd[:90]}")
        return float(total)

    bench.measure("lxc-user-nic", "RSS of all but CMD", "MiB", True, rss)

    child = bench.measure(
        "lxc-user-nic", f"iperf3 child->{BRIDGE_IP} MTU 1500", "Gbit/s", False, iperf_child_to_bridge
    )
    ceiling = {}

    def rootful(impl):
        if "v" not in ceiling:
            ceiling["v"] = iperf_rootful_veth(impl)
        return ceiling["v"]

    bench.measure(
        "lxc-user-nic",
        f"rootful veth->{BRIDGE_IP} (ceiling, one figure)",
        "Gbit/s",
        False,
        rootful,
    )

    def share_of_ceiling(impl):
        got, top = child.values.get(impl.name), ceiling.get("v")
        if not got or not top:
            raise b.MeasureError("no throughput figure to compare")
        return 100.0 * got / top

    bench.measure("lxc-user-nic", "child->bridge as share of rootful veth", "%", False, share_of_ceiling)
    bench.measure(
        "lxc-user-nic",
        f"{CONCURRENT} concurrent first-time runs (random MACs): all done",
        "s",
        True,
        concurrent_first_runs,
    )
    bench.measure(
        "lxc-user-nic",
        f"leases left per run (ours {LEASE_RUNS} runs, theirs {LEASE_RUNS_THEIRS})",
        "leases",
        True,
        leases_added_per_run({"ours": LEASE_RUNS, "theirs": LEASE_RUNS_THEIRS}),
    )


SECTIONS = {"lxc-user-nic": section_lxc_user_nic}
