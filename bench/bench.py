#!/usr/bin/env python3
"""Side-by-side benchmark: this project's rootlesskit ("ours") against
RootlessKit 2.0.2 ("theirs"). Run through bench/run, as root: every measured
command runs as the unprivileged test user (setpriv), the way users run it.

Each section is a small function taking the Bench context and returning rows;
add a driver by writing one more function and registering it in SECTIONS.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_USER = os.environ.get("RK_TEST_USER", "rk-test")
PEERS_DIR = Path(os.environ.get("RK_PEERS_DIR", "/opt/rk-peers"))
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

# Upper bounds for everything that waits (seconds).
RUN_TIMEOUT = 30
STARTUP_WAIT = 15
IPERF_SECONDS = 5


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Implementations under test


@dataclass
class Impl:
    """One rootlesskit to measure, with its binaries in a directory the test
    user can read."""

    name: str
    bin_dir: Path
    error: str | None = None  # set when it cannot be measured at all

    @property
    def rootlesskit(self):
        return str(self.bin_dir / "rootlesskit")


def copy_bins(files, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
        os.chmod(dest / f.name, 0o755)
    os.chmod(dest, 0o755)


def prepare_impls(args, work):
    ours_src = Path(args.ours_bin) if args.ours_bin else None
    if not args.ours_bin and not args.no_build:
        # Static, like RootlessKit's Go binaries (see scripts/build-release).
        log("building ours: scripts/build-release")
        r = subprocess.run(
            [str(REPO / "scripts" / "build-release")],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        if r.returncode != 0:
            sys.exit("bench: scripts/build-release failed")
        ours_src = Path(r.stdout.strip().splitlines()[-1])
    if ours_src is None:
        triple = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
        triple = next(l.split()[1] for l in triple.splitlines() if l.startswith("host:"))
        ours_src = REPO / "target" / triple / "release"
    ours = Impl("ours", work / "ours")
    files = [
        p
        for p in sorted(ours_src.glob("*"))
        if p.is_file()
        and os.access(p, os.X_OK)
        and (
            p.name in ("rootlesskit", "rootlessctl")
            or p.name.startswith("rk-")
            or p.name.startswith("rootlesskit-port-")
        )
    ]
    if not any(p.name == "rootlesskit" for p in files):
        ours.error = f"no rootlesskit binary in {ours_src}"
    else:
        copy_bins(files, ours.bin_dir)

    theirs_src = PEERS_DIR / "rootlesskit" / "usr" / "bin"
    theirs = Impl("theirs", work / "theirs")
    if not (theirs_src / "rootlesskit").is_file():
        theirs.error = f"no {theirs_src}/rootlesskit (run .ci/setup-host)"
    else:
        copy_bins([p for p in theirs_src.glob("*") if p.is_file()], theirs.bin_dir)
    return ours, theirs


# ---------------------------------------------------------------------------
# Running things as the test user


def as_user(argv):
    """argv run as the test user, with a clean environment."""
    return [
        "setpriv",
        f"--reuid={TEST_USER}",
        f"--regid={TEST_USER}",
        "--init-groups",
        "env",
        "-i",
        f"HOME=/home/{TEST_USER}",
        f"USER={TEST_USER}",
        f"LOGNAME={TEST_USER}",
        f"PATH={USER_PATH}",
        *argv,
    ]


def spawn_user(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=False):
    """Starts ARGV as the test user from /, with no stdin, in a session of its
    own (so that kill_tree can take all of it down)."""
    return subprocess.Popen(
        as_user(argv),
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=text,
        start_new_session=True,
    )


def run_user(argv, timeout=RUN_TIMEOUT):
    """Runs argv as the test user; returns CompletedProcess or raises
    MeasureError with its output."""
    try:
        r = subprocess.run(
            as_user(argv),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise MeasureError(f"timed out after {timeout}s: {' '.join(argv)}")
    if r.returncode != 0:
        raise MeasureError(
            f"exit {r.returncode}: {' '.join(argv)}\n{tail(r.stderr)}{tail(r.stdout)}"
        )
    return r


def tail(text, lines=6):
    t = text.strip().splitlines()[-lines:]
    return "".join(f"    | {line}\n" for line in t)


class MeasureError(Exception):
    pass


def check_runs_in_userns(impl, rk_args):
    """One checked run before timing: the command must really run as root of a
    new user namespace mapped onto the test user (so that a build which does
    nothing cannot win), and failures get a clear error rather than a timing."""
    uid = subprocess.run(
        ["id", "-u", TEST_USER], capture_output=True, text=True, check=True
    ).stdout.strip()
    r = run_user([impl.rootlesskit, *rk_args, "--", "cat", "/proc/self/uid_map"])
    first = r.stdout.split("\n", 1)[0].split()
    if first[:2] != ["0", uid]:
        shown = tail(r.stdout) or "    | (nothing)\n"
        raise MeasureError(
            f"CMD did not run as uid 0 mapped onto {TEST_USER} ({uid}); "
            f"its uid_map was:\n{shown}"
        )


# ---------------------------------------------------------------------------
# Process tree helpers (/proc)


def proc_children_map():
    children = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The comm field may contain spaces and parens: ppid follows the last ')'.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(e))
    return children


def descendants(root):
    """root and all its descendants, in tree order."""
    children = proc_children_map()
    out, stack = [], [root]
    while stack and len(out) < 10000:
        pid = stack.pop(0)
        out.append(pid)
        stack.extend(sorted(children.get(pid, [])))
    return out


def proc_status(pid):
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
    except OSError:
        return None
    return fields


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_tree(root, proc):
    """Ends a background rootlesskit: SIGTERM, then SIGKILL for anything left."""
    pids = descendants(root)
    try:
        os.kill(root, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"warning: pid {root} survived SIGKILL")


# ---------------------------------------------------------------------------
# Measurements (generic; sections compose them)


def measure_startup(impl, rk_args, runs):
    """Median wall time (ms) of `rootlesskit RK_ARGS true`, run as the test user."""
    argv = [impl.rootlesskit, *rk_args, "true"]
    check_runs_in_userns(impl, rk_args)
    hyperfine = shutil.which("hyperfine")
    if hyperfine:
        with tempfile.TemporaryDirectory(prefix="rk-bench-hf-") as d:
            os.chmod(d, 0o777)
            out = Path(d) / "hf.json"
            run_user(
                [
                    hyperfine,
                    "--shell=none",
                    "--style=none",
                    "--warmup=2",
                    f"--runs={runs}",
                    f"--export-json={out}",
                    "--",
                    " ".join(argv),
                ],
                timeout=RUN_TIMEOUT * (runs + 2),
            )
            times = json.loads(out.read_text())["results"][0]["times"]
    else:
        # The same loop, in Python, as the test user.
        loop = (
            "import subprocess, sys, time, json\n"
            "argv = json.loads(sys.argv[1]); n = int(sys.argv[2]); ts = []\n"
            "for i in range(n + 2):\n"
            "    t = time.perf_counter()\n"
            "    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL,"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "    ts.append(time.perf_counter() - t)\n"
            "print(json.dumps(ts[2:]))\n"
        )
        r = run_user(
            ["python3", "-c", loop, json.dumps(argv), str(runs)],
            timeout=RUN_TIMEOUT * (runs + 2),
        )
        times = json.loads(r.stdout)
    return statistics.median(times) * 1000.0


def measure_rss(impl, rk_args, exclude_comms):
    """Starts `rootlesskit RK_ARGS -- sleep 30` as the test user, waits for the
    sleep, then sums VmRSS (KiB) over the rootlesskit process tree except the
    sleep itself and processes whose comm is in exclude_comms (the external
    network programs, which both implementations run alike).
    Returns (total_kib, [(pid, comm, rss_kib, counted, cmdline)])."""
    argv = [impl.rootlesskit, *rk_args, "--", "sleep", "30"]
    proc = spawn_user(argv)
    # setpriv and env exec, so proc.pid is the rootlesskit parent itself.
    root = proc.pid
    try:
        deadline = time.monotonic() + STARTUP_WAIT
        sleep_pid = None
        while time.monotonic() < deadline and sleep_pid is None:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")
                raise MeasureError(f"exited {proc.returncode} early: {' '.join(argv)}\n{tail(err)}")
            for pid in descendants(root)[1:]:
                st = proc_status(pid)
                if st and st.get("Name") == "sleep":
                    sleep_pid = pid
                    break
            time.sleep(0.05)
        if sleep_pid is None:
            raise MeasureError(f"no sleep process after {STARTUP_WAIT}s: {' '.join(argv)}")
        time.sleep(1.0)  # let start-up settle (goroutines, lazily touched pages)
        rows, total = [], 0
        for pid in descendants(root):
            st = proc_status(pid)
            if not st:
                continue
            comm = st.get("Name", "?")
            rss = int(st.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in st else 0
            counted = pid != sleep_pid and comm not in exclude_comms
            if counted:
                total += rss
            rows.append((pid, comm, rss, counted, proc_cmdline(pid)))
        return total, rows
    finally:
        kill_tree(root, proc)


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_listening(port):
    """Whether something on the host listens on TCP `port` (any address,
    IPv4 or IPv6), read from /proc so that iperf3's one-off server is not
    used up by a probe."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(suffix) and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def start_iperf_server(bind="127.0.0.1"):
    """A one-off iperf3 server as root on the host's BIND (127.0.0.1 or
    ::1). Returns (process, port) once it listens; stop it with
    stop_iperf_server."""
    port = free_loopback_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-B", bind, "-1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 5
    while not host_listening(port):
        if time.monotonic() > deadline or server.poll() is not None:
            stop_iperf_server(server)
            raise MeasureError(f"iperf3 server did not listen on {bind} port {port}")
        time.sleep(0.05)
    return server, port


def stop_iperf_server(server):
    if server.poll() is None:
        server.kill()
    server.wait(timeout=5)


def iperf_client(port, host="127.0.0.1", prefix=()):
    """An iperf3 client (as root, from the host unless PREFIX says where)
    sending to HOST:PORT for IPERF_SECONDS; its CompletedProcess (-J)."""
    return subprocess.run(
        [*prefix, "iperf3", "-c", host, "-p", str(port), "-t", str(IPERF_SECONDS), "-J"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=IPERF_SECONDS + RUN_TIMEOUT,
    )


def memo(cache, impl, compute):
    """compute(impl), once per implementation: the result, or the
    MeasureError it raised, is kept in CACHE, so that several rows can be
    read off one measurement."""
    if impl.name not in cache:
        try:
            cache[impl.name] = compute(impl)
        except MeasureError as e:
            cache[impl.name] = e
    got = cache[impl.name]
    if isinstance(got, MeasureError):
        raise got
    return got


def measure_iperf(impl, rk_args, server_ip):
    """iperf3 child→host: a one-off server as root on 127.0.0.1 of the host,
    the client inside `rootlesskit RK_ARGS` sending to SERVER_IP for
    IPERF_SECONDS. Returns received bits per second."""
    server, port = start_iperf_server()
    try:
        argv = [
            impl.rootlesskit,
            *rk_args,
            "--",
            "iperf3",
            "-c",
            server_ip,
            "-p",
            str(port),
            "-t",
            str(IPERF_SECONDS),
            "-J",
        ]
        r = run_user(argv, timeout=IPERF_SECONDS + RUN_TIMEOUT)
        try:
            result = json.loads(r.stdout)
            return float(result["end"]["sum_received"]["bits_per_second"])
        except (ValueError, KeyError) as e:
            if not r.stdout.strip():
                raise MeasureError(
                    f"iperf3 printed nothing (did CMD run?): {' '.join(argv)}\n{tail(r.stderr)}"
                )
            raise MeasureError(
                f"cannot parse iperf3 -J output ({e}):\n{tail(r.stdout)}{tail(r.stderr)}"
            )
    finally:
        stop_iperf_server(server)


# ---------------------------------------------------------------------------
# Results


@dataclass
class Row:
    section: str
    metric: str
    unit: str
    lower_is_better: bool
    values: dict = field(default_factory=dict)  # impl name -> float or None
    errors: dict = field(default_factory=dict)  # impl name -> str


class Bench:
    def __init__(self, impls, runs):
        self.impls = impls
        self.runs = runs
        self.rows = []

    def measure(self, section, metric, unit, lower_is_better, fn, rounds=1):
        """Runs fn(impl) -> float for each implementation; a failure of one
        does not stop the other. With rounds > 1 the implementations take
        turns (ours, theirs, theirs, ours, ...) and each gets the median of
        its rounds, so that drift on a busy machine hits both alike."""
        row = Row(section, metric, unit, lower_is_better)
        samples = {impl.name: [] for impl in self.impls}
        for r in range(rounds):
            order = self.impls if r % 2 == 0 else list(reversed(self.impls))
            for impl in order:
                if impl.error:
                    row.errors[impl.name] = impl.error
                    continue
                if impl.name in row.errors:
                    continue
                log(f"{section}: {metric} [{impl.name}] round {r + 1}/{rounds}")
                try:
                    v = fn(impl)
                    samples[impl.name].append(v)
                    log(f"  -> {fmt_value(v, unit)}")
                except MeasureError as e:
                    row.errors[impl.name] = str(e)
                    log(f"  -> FAILED: {e}")
        for impl in self.impls:
            vals = samples[impl.name]
            ok = vals and impl.name not in row.errors
            row.values[impl.name] = statistics.median(vals) if ok else None
        self.rows.append(row)
        return row


def fmt_value(v, unit):
    if v is None:
        return "FAIL"
    if unit == "Gbit/s":
        return f"{v / 1e9:.2f}"
    if unit == "MiB":
        return f"{v / 1024:.1f}"
    return f"{v:.1f}"


# ---------------------------------------------------------------------------
# Sections. Each takes the Bench and records rows through bench.measure().
# To add a driver, write a function like these and register it in SECTIONS.


def section_startup(bench):
    cases = [
        ("--net=host", ["--net=host"]),
        ("--net=slirp4netns", ["--net=slirp4netns", "--disable-host-loopback"]),
    ]
    for label, rk_args in cases:
        bench.measure(
            "startup",
            f"{label} true (median of {bench.runs})",
            "ms",
            True,
            lambda impl, a=rk_args: measure_startup(impl, a, bench.runs),
        )


def section_memory(bench):
    def rss(impl):
        total, procs = measure_rss(impl, ["--net=slirp4netns"], {"slirp4netns"})
        for pid, comm, kib, counted, cmd in procs:
            mark = "+" if counted else " "
            log(f"  {mark} {impl.name:6} pid {pid:<7} {comm:16} {kib / 1024:7.1f} MiB  {cmd[:100]}")
        log(f"  = {impl.name}: {total / 1024:.1f} MiB (+ counted; slirp4netns and sleep left out)")
        return float(total)

    bench.measure("memory", "--net=slirp4netns RSS, all but slirp4netns+CMD", "MiB", True, rss)


IPERF_ROUNDS = int(os.environ.get("RK_BENCH_IPERF_ROUNDS", "3"))


def section_iperf_slirp4netns(bench):
    for mtu in (1500, 65520):
        bench.measure(
            "iperf",
            f"slirp4netns child->host MTU {mtu} (median of {IPERF_ROUNDS})",
            "Gbit/s",
            False,
            lambda impl, m=mtu: measure_iperf(
                impl, ["--net=slirp4netns", f"--mtu={m}"], "10.0.2.2"
            ),
            rounds=IPERF_ROUNDS,
        )


# Later sections (pasta, lxc-user-nic, vpnkit, gvisor-tap-vsock, port
# forwarding) fit the same shape, e.g.:
#   def section_iperf_pasta(bench):
#       bench.measure("iperf", "pasta child->host MTU 65520", "Gbit/s", False,
#                     lambda impl: measure_iperf(impl, ["--net=pasta"], "10.0.2.2"))
SECTIONS = {
    "startup": section_startup,
    "memory": section_memory,
    "iperf": section_iperf_slirp4netns,
}


def load_driver_sections():
    """Each driver's sections live in bench/sections/NAME.py, which defines
    `SECTIONS = {"name": function}` using this module's helpers (imported as
    `import bench as b`)."""
    import importlib.util

    sys.modules.setdefault("bench", sys.modules[__name__])
    for path in sorted((Path(__file__).parent / "sections").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"bench_sections_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        # Registered, so that one section can use another's helpers.
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        SECTIONS.update(getattr(mod, "SECTIONS", {}))


load_driver_sections()


def print_table(bench):
    names = [i.name for i in bench.impls]
    header = ["section", "metric", "unit", *names, "ours/theirs", "better"]
    lines = []
    for r in bench.rows:
        ours, theirs = r.values.get("ours"), r.values.get("theirs")
        ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else "-"
        if ours is None or theirs is None:
            better = "-"
        elif (ours < theirs) == r.lower_is_better or ours == theirs:
            better = "ours"
        else:
            better = "theirs"
        values = [
            fmt_value(r.values.get(n), r.unit) if (r.values.get(n) is not None or n in r.errors) else "n/a"
            for n in names
        ]
        lines.append([r.section, r.metric, r.unit, *values, ratio, better])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    print("\n".join(out))
    failures = [(r, n, e) for r in bench.rows for n, e in r.errors.items()]
    if failures:
        print("\nfailures:")
        for r, n, e in failures:
            lines = [line.strip() for line in e.strip().splitlines() if line.strip()]
            print(f"  {r.section} / {r.metric} [{n}]: {lines[0]}")
            if len(lines) > 1:
                print(f"      {lines[-1]}")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--only",
        action="append",
        metavar="SECTION",
        help=f"run only this section (repeatable or comma-separated): {', '.join(SECTIONS)}",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=int(os.environ.get("RK_BENCH_RUNS", "21")),
        help="runs per start-up timing (default 21, env RK_BENCH_RUNS)",
    )
    ap.add_argument("--ours-bin", help="directory with our built binaries (skips the build)")
    ap.add_argument("--no-build", action="store_true", help="use target/HOST-TRIPLE/release (scripts/build-release) as it is")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("bench: run as root (it drops to the test user for every measured command)")
    selected = []
    for item in args.only or list(SECTIONS):
        for s in item.split(","):
            if s not in SECTIONS:
                sys.exit(f"bench: unknown section {s!r}; sections: {', '.join(SECTIONS)}")
            selected.append(s)
    if not 1 <= args.runs <= 1000:
        sys.exit("bench: --runs must be between 1 and 1000")

    with tempfile.TemporaryDirectory(prefix="rk-bench-") as work:
        work = Path(work)
        os.chmod(work, 0o755)
        impls = prepare_impls(args, work)
        for i in impls:
            if i.error:
                log(f"{i.name}: cannot measure: {i.error}")
        log("hyperfine: " + (shutil.which("hyperfine") or "absent, timing with a Python loop"))
        bench = Bench(impls, args.runs)
        for s in selected:
            SECTIONS[s](bench)

    print_table(bench)
    if args.json:
        Path(args.json).write_text(
            json.dumps([r.__dict__ for r in bench.rows], indent=2) + "\n"
        )
    sys.exit(1 if any(r.errors for r in bench.rows) else 0)


if __name__ == "__main__":
    main()
