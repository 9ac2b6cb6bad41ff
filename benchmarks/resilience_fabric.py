"""The process fabric of ``benchmarks/resilience.py``: every part a real, separate process.

* a 3-node nats-server cluster (:class:`~cctf.devfabric.nats.NatsFabric`, R3 streams);
* five authoritative DNS servers (``cctf chaos serve``, the unsigned demo zone), one per region;
* five agents (``cctf agent run``), one per region, each asking its region's server;
* three coordinators (``cctf coordinator run``, ``c1``-``c3``, own keys and durables,
  ``per_coordinator_subjects``, 3-of-5, Prometheus metrics on a local port);
* one verifying subscriber (``cctf watch --coordinators 2:c1,c2,c3 --json``); the harness stamps each
  line it prints with its arrival time (``time.monotonic``, read by a task doing nothing else).

Every process is started with its own session and stopped by its pid (SIGTERM, then SIGKILL); logs go
to files under the work directory. :class:`Auditor` (the harness's own admin connection) holds one
durable consumer on every vote stream, created before any agent publishes: the vote streams retain by
interest, so every ballot the stream acknowledged is delivered to it (the ground truth of "ballots
the stream acknowledged"), and one on the verdict stream (every coordinator's verdicts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from cctf.bus.accounts import ADMIN_USER, DEFAULT_REGIONS
from cctf.bus.streams import ensure_streams, verdict_stream_name, votes_stream_name
from cctf.bus_schemas.envelope import decode_envelope
from cctf.bus_schemas.messages import Ballot, Verdict
from cctf.chaos.zone import DEMO_NAMES
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.crypto.trust import Role, TrustConfig, TrustEntry
from cctf.devfabric.nats import NatsFabric, free_ports

COORDS = ("c1", "c2", "c3")
VERDICT_REGION = DEFAULT_REGIONS[0]
CCTF = [sys.executable, "-m", "cctf.cli"]


def agent_id(region: str) -> str:
    return f"agent-{region}"


@dataclass
class Proc:
    """One child process of the fabric (restartable: same command, same log file)."""

    name: str
    argv: list[str]
    log: Path
    cwd: Path
    popen: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self, *, stdout_pipe: bool = False) -> None:
        fh = self.log.open("ab")
        try:
            self.popen = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else fh,
                stderr=fh,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            fh.close()
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.returncode is None

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            await self.popen.wait()

    async def stop(self, timeout_s: float = 6.0) -> int | None:
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.popen.wait(), timeout_s)
        except TimeoutError:
            await self.kill()
        return self.popen.returncode


@dataclass
class Arrival:
    t: float
    name: str
    qtype: str
    round: int
    outcome: str
    coordinator: str


@dataclass
class Fabric:
    """The whole fabric; :meth:`start` brings it up, :meth:`stop` takes everything down."""

    workdir: Path
    round_ms: int = 1000
    names: tuple[str, ...] = DEMO_NAMES
    regions: tuple[str, ...] = DEFAULT_REGIONS
    nats: NatsFabric | None = None
    dns: dict[str, Proc] = field(default_factory=dict)
    agents: dict[str, Proc] = field(default_factory=dict)
    coords: dict[str, Proc] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    subscriber: Proc | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    sub_errors: list[str] = field(default_factory=list)
    sub_exits: list[dict[str, Any]] = field(default_factory=list)
    auditor: Auditor | None = None
    _reader: asyncio.Task[None] | None = None

    # ---- set-up

    def _write_keys(self) -> Path:
        keydir = self.workdir / "keys"
        entries = []
        for r in self.regions:
            key = SigningKey.generate()
            save_signing_key(keydir / f"{agent_id(r)}.key.json", key)
            entries.append(TrustEntry(Role.AGENT, agent_id(r), r, key.public))
        for c in COORDS:
            key = SigningKey.generate()
            save_signing_key(keydir / f"{c}.key.json", key)
            entries.append(TrustEntry(Role.COORDINATOR, c, VERDICT_REGION, key.public))
        path = self.workdir / "trust.json"
        TrustConfig(entries).save(path)
        return path

    def _proc(self, name: str, argv: list[str]) -> Proc:
        return Proc(name, argv, self.workdir / "logs" / f"{name}.log", self.workdir)

    async def start(self) -> None:
        w = self.workdir
        (w / "logs").mkdir(parents=True, exist_ok=True)
        self.nats = await NatsFabric.astart(w / "nats", nodes=3, regions=self.regions)
        creds = self.nats.write_credentials(w / "nats-credentials.json")
        admin = await self.nats.connect(
            ADMIN_USER, max_reconnect_attempts=-1, reconnect_time_wait=0.1
        )
        await ensure_streams(admin.jetstream(), self.regions, 3)
        self.auditor = Auditor(admin, self.regions)
        await self.auditor.start()
        trust = self._write_keys()
        ports = free_ports(2 * len(self.regions) + len(COORDS))
        for i, r in enumerate(self.regions):
            self.dns[r] = self._proc(
                f"dns-{r}",
                [
                    *CCTF,
                    "chaos",
                    "serve",
                    "--port",
                    str(ports[2 * i]),
                    "--control-port",
                    str(ports[2 * i + 1]),
                    "--token-file",
                    str(w / f"dns-{r}.token"),
                ],
            )
            await self.dns[r].start()
        names = [[n, "A"] for n in self.names]
        for j, c in enumerate(COORDS):
            self.metrics_ports[c] = ports[2 * len(self.regions) + j]
            cfg = {
                "coordinator": c,
                "region": VERDICT_REGION,
                "key_file": f"keys/{c}.key.json",
                "trust_file": str(trust),
                "nats": {"credentials": str(creds), "user": "coordinator"},
                "rule": {"k": 3, "n": len(self.regions)},
                "electorate": [f"{agent_id(r)}/r1" for r in self.regions],
                "names": names,
                "round_ms": self.round_ms,
                "per_coordinator_subjects": True,
                "durable": c,
                "metrics": f"127.0.0.1:{self.metrics_ports[c]}",
            }
            (w / f"{c}.json").write_text(json.dumps(cfg, indent=1))
            self.coords[c] = self._proc(
                c, [*CCTF, "coordinator", "run", "--config", str(w / f"{c}.json")]
            )
            await self.coords[c].start()
        await asyncio.sleep(1.5)  # the coordinators bind their durables before the first ballot
        for i, r in enumerate(self.regions):
            cfg = {
                "agent": agent_id(r),
                "region": r,
                "key_file": f"keys/{agent_id(r)}.key.json",
                "trust": str(trust),
                "nats": {"credentials": str(creds), "user": agent_id(r)},
                "resolvers": [
                    {"id": "r1", "address": "127.0.0.1", "port": ports[2 * i], "transport": "udp"}
                ],
                "names": names,
                "round_ms": self.round_ms,
            }
            (w / f"{agent_id(r)}.json").write_text(json.dumps(cfg, indent=1))
            self.agents[r] = self._proc(
                agent_id(r), [*CCTF, "agent", "run", "--config", str(w / f"{agent_id(r)}.json")]
            )
            await self.agents[r].start()
        self.subscriber = self._proc(
            "subscriber",
            [
                *CCTF,
                "watch",
                "--credentials",
                str(creds),
                "--trust",
                str(trust),
                "--region",
                VERDICT_REGION,
                "--coordinators",
                "2:" + ",".join(COORDS),
                "--round-ms",
                str(self.round_ms),
                "--json",
            ],
        )
        await self.subscriber.start(stdout_pipe=True)
        self._reader = asyncio.create_task(self._read_subscriber())

    async def _read_subscriber(self) -> None:
        """Stamp every line of the subscriber; if it exits (it should not), note the exit in
        ``sub_exits`` (code and the last line of its log) and start it again."""
        while True:
            assert self.subscriber is not None and self.subscriber.popen is not None
            out = self.subscriber.popen.stdout
            assert out is not None
            while line := await out.readline():
                t = time.monotonic()
                try:
                    d = json.loads(line)
                    self.arrivals.append(
                        Arrival(
                            t, d["name"], d["qtype"], d["round"], d["outcome"], d["coordinator"]
                        )
                    )
                except (ValueError, KeyError, TypeError):
                    self.sub_errors.append(line[:200].decode(errors="replace"))
            code = await self.subscriber.popen.wait()
            tail = self.subscriber.log.read_text(errors="replace").strip().splitlines()[-1:]
            self.sub_exits.append({"t": time.monotonic(), "code": code, "log": tail})
            await asyncio.sleep(0.2)
            await self.subscriber.start(stdout_pipe=True)

    async def wait_verdicts(self, timeout_s: float = 60.0) -> None:
        """Until the subscriber has used a verdict for every configured name."""
        deadline = time.monotonic() + timeout_s
        while {a.name for a in self.arrivals} < set(self.names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no verdicts at the subscriber in {timeout_s}s; see logs/")
            await asyncio.sleep(0.2)

    # ---- metrics

    async def scrape(self, coordinator: str) -> dict[str, float]:
        """The coordinator's ``cctf_*`` counters (its current incarnation), or {} if down."""
        port = self.metrics_ports[coordinator]
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            body = await asyncio.wait_for(reader.read(), 5.0)
            writer.close()
        except (OSError, TimeoutError):
            return {}
        out: dict[str, float] = {}
        for raw in body.decode(errors="replace").splitlines():
            if raw.startswith("cctf_") and "_bucket" not in raw:
                key, _, value = raw.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    # ---- tear-down

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()  # no restart of the subscriber while stopping
        procs = [self.subscriber, *self.agents.values(), *self.coords.values(), *self.dns.values()]
        await asyncio.gather(*(p.stop() for p in procs if p is not None), return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
        if self.auditor is not None:
            await self.auditor.stop()
        if self.nats is not None:
            await self.nats.astop()


class Auditor:
    """Durable consumers of the harness: every ballot stored in a vote stream and every verdict
    stored in the verdict stream, with the time it was read (stored ballots = acknowledged ones)."""

    DURABLE = "kills-audit"

    def __init__(self, nc: Any, regions: tuple[str, ...]) -> None:
        self.nc = nc
        self.regions = regions
        self.ballots: dict[tuple[str, int, int], float] = {}  # (agent, round, stream seq) -> t
        self.verdicts: dict[tuple[str, str, int], str] = {}  # (coordinator, name, round) -> outcome
        self._tasks: list[asyncio.Task[None]] = []
        self.errors = 0

    async def start(self) -> None:
        js = self.nc.jetstream()
        for r in self.regions:
            sub = await js.pull_subscribe(
                f"cctf.v1.vote.{r}.>", durable=self.DURABLE, stream=votes_stream_name(r)
            )
            self._tasks.append(asyncio.create_task(self._pull(sub, self._ballot)))
        sub = await js.pull_subscribe(
            f"cctf.v1.verdict.{VERDICT_REGION}.>",
            durable=self.DURABLE,
            stream=verdict_stream_name(VERDICT_REGION),
        )
        self._tasks.append(asyncio.create_task(self._pull(sub, self._verdict)))

    async def _pull(self, sub: Any, handle: Any) -> None:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # timeouts, elections, reconnects: keep reading
                await asyncio.sleep(0.05)
                continue
            for m in msgs:
                try:
                    handle(m)
                except Exception:
                    self.errors += 1
                with contextlib.suppress(Exception):
                    await m.ack()

    def _ballot(self, m: Any) -> None:
        env = decode_envelope(m.data)
        b = msgspec.msgpack.decode(env.payload, type=Ballot)
        self.ballots.setdefault((b.agent, b.round, m.metadata.sequence.stream), time.monotonic())

    def _verdict(self, m: Any) -> None:
        env = decode_envelope(m.data)
        v = msgspec.msgpack.decode(env.payload, type=Verdict)
        self.verdicts[(v.coordinator, v.qname, v.round)] = v.outcome.value

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.nc.close()
