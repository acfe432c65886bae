"""The test hosts themselves (tests/netns.py), without bgrun: TCP from a namespace to a
server in the root namespace, a cut and a black hole that stop it, a heal that brings it
back, a host's processes all killed, and nothing left behind."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import IP, Network, ip, skip_unless_possible

skip_unless_possible()

# Connects to the server, sends a line, prints what came back, or why it failed.
CLIENT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.sendall(b"ping\\n")
    print(s.recv(100).decode().strip())
except OSError as e:
    print("failed", type(e).__name__)
"""

# Holds one connection open: sends a line each time one arrives on stdin, prints replies.
HOLDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
print("open", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        print(s.recv(100).decode().strip(), flush=True)
    except OSError as e:
        print("failed", type(e).__name__, flush=True)
"""


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on every address of the root namespace; yields its port."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client killed mid-way resets
            while data := conn.recv(100):
                conn.sendall(b"echo " + data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def connect(host: object, port: int, timeout: float = 1.5) -> str:
    from tests.netns import Host

    assert isinstance(host, Host)
    result = host.run([sys.executable, "-c", CLIENT, host.server_addr, str(port), str(timeout)])
    return result.stdout.strip()


def test_a_host_reaches_the_server_over_its_own_link_and_a_cut_stops_it(
        tmp_path: Path, echo_server: int) -> None:
    with Network(tmp_path) as net:
        h1, h2 = net.add("h1"), net.add("h2")
        assert h1.server_addr != h2.server_addr and h1.addr != h2.addr
        assert connect(h1, echo_server) == "echo ping"
        assert connect(h2, echo_server) == "echo ping"
        # The namespace has no other way out: not the machine's own addresses.
        assert "lo" in ip("-o", "link", "show", ns=h1.ns)
        assert connect(h1, echo_server).startswith("echo")

        h1.cut()
        assert connect(h1, echo_server).startswith("failed")
        assert connect(h2, echo_server) == "echo ping"  # the other host is untouched
        h1.heal()
        assert connect(h1, echo_server) == "echo ping"


def test_a_black_hole_drops_both_ways_silently_and_heals(
        tmp_path: Path, echo_server: int) -> None:
    with Network(tmp_path) as net:
        h1, h2 = net.add("h1"), net.add("h2")
        holder = subprocess.Popen(
            h1.command([sys.executable, "-c", HOLDER, h1.server_addr, str(echo_server), "1"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        h1.procs.append(holder)
        assert holder.stdin and holder.stdout
        assert holder.stdout.readline().strip() == "open"
        holder.stdin.write("a\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "echo a"

        h1.blackhole()
        # The held connection is not told anything: its send is accepted, no reply comes.
        holder.stdin.write("b\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "failed TimeoutError"
        assert connect(h1, echo_server) == "failed TimeoutError"
        assert connect(h2, echo_server) == "echo ping"

        h1.heal()
        assert connect(h1, echo_server) == "echo ping"
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


def test_kill_all_ends_every_process_of_the_host_and_only_those(tmp_path: Path) -> None:
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
              "'import os, time; os.setsid(); time.sleep(60)']); time.sleep(60)"
    with Network(tmp_path) as net:
        h1, h2 = net.add("h1"), net.add("h2")
        h1.popen([sys.executable, "-c", sleeper])
        other = h2.popen([sys.executable, "-c", sleeper])
        deadline = time.monotonic() + 10
        while len(h1.pids()) < 2 or len(h2.pids()) < 2:  # each with its detached grandchild
            assert time.monotonic() < deadline, (h1.pids(), h2.pids())
            time.sleep(0.05)

        h1.kill_all()
        assert h1.pids() == []
        assert len(h2.pids()) == 2 and other.poll() is None


def test_everything_is_torn_down_also_when_the_test_fails(tmp_path: Path) -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="test failed"), Network(tmp_path) as net:
        host = net.add("h1")
        host.popen([sys.executable, "-c", "import time; time.sleep(60)"])
        names += [host.ns, host.root_veth]
        raise RuntimeError("test failed")
    assert names[0] not in ip("netns", "list")
    assert names[1] not in ip("-o", "link", "show")
    assert subprocess.run([IP, "netns", "pids", names[0]], capture_output=True).returncode != 0
