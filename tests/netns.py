"""Several "hosts" on one machine: network namespaces joined to the root namespace by veth.

Each host is a network namespace with loopback up and one veth pair to the root namespace,
on its own /30 subnet from TEST_RANGE. The PostgreSQL server of the tests listens on all
addresses in the root namespace, so a host reaches it over TCP at `host.server_addr` (the
root end of its veth): a Unix socket would bypass a cut, TCP through the veth does not.

    with Network(tmp_path) as net:
        h1 = net.add("h1")
        h1.popen(["bgrun", "worker"], env=h1.env(store_url_for(h1.server_addr)))
        h1.cut(); ...; h1.heal()
        h1.kill_all()

Names carry this process's pid, so parallel test runs never meet, and everything is torn
down when the `with` block ends, on failure too. Namespaces left by a run that was itself
killed (its pid is gone) are swept when the next Network starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

# Private addresses that exist only between this machine's root namespace and the test
# namespaces. A blackhole route for the whole range in the root namespace keeps a packet
# for a host whose veth is gone (a server's late FIN or keepalive) from leaving by the
# default route: this traffic must never leave the machine.
TEST_RANGE = ipaddress.ip_network("10.213.0.0/16")
PREFIX = "bgt"  # namespace names: bgt<pid>-<n>; veth names: bv<pid>x<n>r / bv<pid>x<n>h
LOCK_FILE = Path("/tmp/bgrun-netns.lock")
_netem: bool | None = None  # whether this kernel has netem; None: not tried yet


def _tool(name: str) -> str | None:
    """Where iproute2's `name` is: on PATH, or in /usr/sbin or /sbin when PATH leaves them out."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


IP, TC = _tool("ip") or "ip", _tool("tc") or "tc"


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add, veth pairs); CI runs as root"
    if _tool("ip") is None or _tool("tc") is None:
        return "the ip and tc commands (Debian's iproute2) are not installed"
    return None


def skip_unless_possible() -> None:
    """Skip the calling test (or module, at import) with the reason namespaces cannot be made."""
    reason = unavailable()
    if reason:
        pytest.skip(reason, allow_module_level=True)


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run `ip ARGS` (in namespace `ns` when given) and return its output."""
    argv = [IP, *(["netns", "exec", ns, IP] if ns else []), *args]
    return _run(argv, check)


def tc(*args: str, ns: str | None = None, check: bool = True) -> str:
    argv = [*([IP, "netns", "exec", ns] if ns else []), TC, *args]
    return _run(argv, check)


def _run(argv: Sequence[str], check: bool) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


class Host:
    """One test host: a network namespace, its veth pair, its own folder and logs."""

    def __init__(self, name: str, ns: str, veth: str, index: int, home: Path) -> None:
        self.name = name  # BGRUN_HOST
        self.ns = ns
        self.root_veth = f"{veth}r"
        self.host_veth = f"{veth}h"
        base = int(TEST_RANGE.network_address) + 4 * index
        self.server_addr = str(ipaddress.ip_address(base + 1))  # root end: the server
        self.addr = str(ipaddress.ip_address(base + 2))  # this host's end
        self.home = home
        self.log_dir = home / "logs"
        self.procs: list[subprocess.Popen[Any]] = []
        self._outputs: list[IO[bytes]] = []

    def create(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        ip("netns", "add", self.ns)
        ip("link", "set", "lo", "up", ns=self.ns)
        ip("link", "add", self.root_veth, "type", "veth", "peer", "name", self.host_veth)
        ip("link", "set", self.host_veth, "netns", self.ns)
        ip("addr", "add", f"{self.server_addr}/30", "dev", self.root_veth)
        ip("addr", "add", f"{self.addr}/30", "dev", self.host_veth, ns=self.ns)
        ip("link", "set", self.root_veth, "up")
        ip("link", "set", self.host_veth, "up", ns=self.ns)

    def env(self, store: str | None = None, **extra: str) -> dict[str, str]:
        """This host's environment: the test's, plus BGRUN_HOST, BGRUN_LOG_DIR and the store."""
        env = {**os.environ, "BGRUN_HOST": self.name, "BGRUN_LOG_DIR": str(self.log_dir)}
        if store is not None:
            env["BGRUN_STORE"] = store
        env.update(extra)
        return env

    def command(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.ns, *argv]

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None, output: str | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` in this host (in its folder unless `cwd`); output to home/`output`."""
        sink: IO[bytes] | int = subprocess.DEVNULL
        if output:
            sink = open(self.home / output, "ab")  # noqa: SIM115 - closed at teardown
            self._outputs.append(sink)
        proc = subprocess.Popen(self.command(argv), env=dict(env or self.env()),
                                cwd=cwd or self.home, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `argv` in this host to its end; its output captured."""
        return subprocess.run(self.command(argv), env=dict(env or self.env()),
                              cwd=cwd or self.home, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    # Faults. A cut takes the host's end of the link down: the host loses its route to the
    # server, the root end loses carrier, and packets either way are dropped on the spot.
    def cut(self) -> None:
        ip("link", "set", self.host_veth, "down", ns=self.ns)

    def blackhole(self) -> None:
        """Drop every packet both ways while the link stays up (nobody is told anything).

        netem's 100% loss where the kernel has netem; where it does not (some VM kernels
        leave it out), a FIFO of length 0, which drops each packet at enqueue just as
        silently.
        """
        global _netem
        for dev, ns in ((self.root_veth, None), (self.host_veth, self.ns)):
            if _netem is not False:
                try:
                    tc("qdisc", "replace", "dev", dev, "root", "netem", "loss", "100%", ns=ns)
                    _netem = True
                    continue
                except RuntimeError:
                    _netem = False
            tc("qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "0", ns=ns)

    def heal(self) -> None:
        """Undo cut() and blackhole(): the link up and no loss either way."""
        for dev, ns in ((self.root_veth, None), (self.host_veth, self.ns)):
            tc("qdisc", "del", "dev", dev, "root", ns=ns, check=False)
        ip("link", "set", self.host_veth, "up", ns=self.ns)
        ip("link", "set", self.root_veth, "up")

    def pids(self) -> list[int]:
        """Every live process in this host (its network namespace)."""
        out = ip("netns", "pids", self.ns, check=False)
        return [int(p) for p in out.split() if p.isdigit()]

    def kill_all(self, timeout: float = 10) -> None:
        """SIGKILL every process of the host, as a power cut would.

        Stopped first, then killed: killed one by one, a runner that saw another die could
        start a replacement before its own turn came.
        """
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            self._reap()
            if time.monotonic() > deadline:
                raise AssertionError(f"host {self.name}: processes {pids} outlived SIGKILL")
            time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.01)

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError):
            self.kill_all()
        ip("netns", "del", self.ns, check=False)  # takes the host end, and so the pair
        ip("link", "del", self.root_veth, check=False)
        for sink in self._outputs:
            sink.close()



class Network:
    """The hosts of one test; `with Network(folder) as net:` tears them all down."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hosts: list[Host] = []
        self.tag = f"{PREFIX}{os.getpid()}"

    def __enter__(self) -> Network:
        skip_unless_possible()
        sweep_stale()
        ip("route", "replace", "blackhole", str(TEST_RANGE))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str) -> Host:
        """A new host named `name` (its BGRUN_HOST), with its folder at folder/name."""
        with self._lock():
            index = free_index()
            serial = _next_serial()
            host = Host(name, f"{self.tag}-{serial}", f"bv{os.getpid()}x{serial}", index,
                        self.folder / name)
            self.hosts.append(host)
            host.create()
        return host

    def close(self) -> None:
        for host in self.hosts:  # every process first: none may outlive its link
            with contextlib.suppress(AssertionError):
                host.kill_all()
        for host in self.hosts:
            host.destroy()
        self.hosts.clear()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Held while a subnet is picked and taken, so two test runs never pick the same."""
        with open(LOCK_FILE, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


_serial = 0


def _next_serial() -> int:
    global _serial
    _serial += 1
    return _serial


def free_index() -> int:
    """The first /30 of TEST_RANGE that no address on this machine's root namespace uses."""
    used = set()
    for line in ip("-4", "-o", "addr", "show").splitlines():
        match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if match and ipaddress.ip_address(match.group(1)) in TEST_RANGE:
            offset = int(ipaddress.ip_address(match.group(1))) - int(TEST_RANGE.network_address)
            used.add(offset // 4)
    index = next(i for i in range(TEST_RANGE.num_addresses // 4) if i not in used)
    return index


def sweep_stale() -> None:
    """Tear down the namespaces and veths of test runs whose process is gone."""
    for line in ip("netns", "list", check=False).splitlines():
        match = re.match(rf"{PREFIX}(\d+)-\d+", line)
        if match and not _alive(int(match.group(1))):
            name = line.split()[0]
            for pid in ip("netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", check=False).splitlines():
        match = re.search(r"\d+: (bv(\d+)x\d+r)[@:]", line)
        if match and not _alive(int(match.group(2))):
            ip("link", "del", match.group(1), check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
