"""A region cut off: its agent in a network namespace, its traffic dropped with nftables (adapter).

:class:`Partition` creates a network namespace with a veth pair to the host (``10.213.X.1`` host
side, ``10.213.X.2`` inside), relays TCP from the host side of the pair to the NATS server on
loopback, and runs ``cctf agent run`` inside the namespace (``ip netns exec``). :meth:`cut` drops
every packet in and out of the namespace with an nftables table of its own; :meth:`heal` deletes
it. The kernel has no netem, so a partition is total. Needs root, ``ip`` (iproute2) and ``nft``
(nftables; ``.ci/run`` installs it). Used by the chaos runner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cctf.errors import CctfError
from cctf.util.deadline import stop_tasks

TABLE = "cctfchaos"


class PartitionError(CctfError):
    """The namespace could not be set up (one line: missing tool, not root, ...)."""


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise PartitionError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")


def check_tools() -> None:
    if os.geteuid() != 0:
        raise PartitionError("the partition scenario needs root (network namespaces, nftables)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise PartitionError(
                f"the partition scenario needs {tool!r} (apt-get install nftables)"
            )


class Partition:
    def __init__(self, tag: int) -> None:
        self.tag = tag % 100_000
        octet = (tag % 200) + 20
        self.netns = f"cctf-chaos-{self.tag}"
        self.host_if = f"cch{self.tag}"
        self.ns_if = f"ccn{self.tag}"
        self.host_addr = f"10.213.{octet}.1"
        self.ns_addr = f"10.213.{octet}.2"
        self._relay: asyncio.Server | None = None
        self._relay_tasks: set[asyncio.Task[None]] = set()
        self.agent: asyncio.subprocess.Process | None = None
        self.is_cut = False

    def create(self) -> None:
        check_tools()
        self.destroy()  # a leftover of a killed run with the same tag
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.netns)
            _ip("addr", "add", f"{self.host_addr}/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("addr", "add", f"{self.ns_addr}/24", "dev", self.ns_if, netns=self.netns)
            _ip("link", "set", self.ns_if, "up", netns=self.netns)
            _ip("link", "set", "lo", "up", netns=self.netns)
        except PartitionError:
            self.destroy()
            raise

    def destroy(self) -> None:
        for cmd in (["ip", "netns", "del", self.netns], ["ip", "link", "del", self.host_if]):
            subprocess.run(cmd, capture_output=True, timeout=10, check=False)

    async def relay_to(self, port: int) -> int:
        """Relay TCP from ``host_addr`` (a free port, returned) to ``127.0.0.1:port``."""

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            for t in (
                asyncio.create_task(pipe(reader, up_w)),
                asyncio.create_task(pipe(up_r, writer)),
            ):
                self._relay_tasks.add(t)
                t.add_done_callback(self._relay_tasks.discard)

        self._relay = await asyncio.start_server(on_conn, self.host_addr, 0)
        return int(self._relay.sockets[0].getsockname()[1])

    async def start_agent(self, config: Path, log: Path) -> None:
        out = log.open("ab")
        try:
            self.agent = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.netns,
                sys.executable, "-m", "cctf", "agent", "run", "--config", str(config),
                "--log-level", "warning",
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        finally:
            out.close()

    def cut(self) -> None:
        """Drop every packet in and out of the namespace."""
        rules = (
            f"add table inet {TABLE}\n"
            f"add chain inet {TABLE} out {{ type filter hook output priority 0; policy drop; }}\n"
            f"add chain inet {TABLE} in {{ type filter hook input priority 0; policy drop; }}\n"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "-f", "-"],
            input=rules, capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise PartitionError(f"nft: {done.stderr.strip()}")
        self.is_cut = True

    def heal(self) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", TABLE],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise PartitionError(f"nft: {done.stderr.strip()}")
        self.is_cut = False

    async def aclose(self) -> None:
        if self.agent is not None and self.agent.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.agent.terminate()
            try:
                await asyncio.wait_for(self.agent.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.agent.kill()
                await self.agent.wait()
        if self._relay is not None:
            self._relay.close()
            await stop_tasks(list(self._relay_tasks), 2.0, what="namespace relay")
        self.destroy()
