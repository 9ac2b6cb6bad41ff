"""The chaos DNS server's control channel, the fabric state file, tokens and `cctf chaos` (server behaviour: test_chaos_dns.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from chaosclient import FORGED, HOST, addresses, server_fixture, tcp, udp  # noqa: F401

from cctf.chaos.control import (
    ChaosControlClient,
    ChaosControlError,
    FabricFileError,
    HostPort,
    ResolverEndpoint,
    load_fabric_resolvers,
    read_token_file,
    write_fabric_resolvers,
    write_token_file,
)
from cctf.chaos.dnsserver import FaultyDnsServer
from cctf.chaos.faults import FaultError, Faults
from cctf.cli import main as cli_main
from cctf.errors import CctfError, ConfigError
from cctf.util.files import MAX_FILE_BYTES

# -- control channel --------------------------------------------------------------------------


async def test_control_client_round_trip(server: FaultyDnsServer) -> None:
    client = ChaosControlClient(HOST, server.control_port, server.control_token)
    assert await client.get() == Faults()
    assert await client.set(Faults(poison=FORGED, ttl=9)) == Faults(poison=FORGED, ttl=9)
    assert server.faults == Faults(poison=FORGED, ttl=9)
    response = await udp(server, "cdn.demo.test.")
    assert addresses(response) == [FORGED] and response.answer[0].ttl == 9
    stats = await client.stats()
    assert stats["stats"]["served"]["poison"] == 1
    assert stats["faults"]["poison"] == FORGED
    assert await client.clear() == Faults()
    assert addresses(await udp(server, "cdn.demo.test.")) == ["192.0.2.80"]
    assert server.control_token not in repr(client)


async def test_control_rejects_a_bad_token(server: FaultyDnsServer) -> None:
    client = ChaosControlClient(HOST, server.control_port, "not-the-token")
    with pytest.raises(ChaosControlError, match="unauthorized"):
        await client.set(Faults(blackhole=True))
    assert server.faults == Faults()


async def _raw_control(port: int, *lines: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"".join(lines))
    await writer.drain()
    out = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 2)
        if not line:
            break
        out.append(json.loads(line))
        if len(out) == len(lines):
            break
    writer.close()
    return out


async def test_control_invalid_input_gets_clear_errors(server: FaultyDnsServer) -> None:
    token = server.control_token

    def req(**fields: Any) -> bytes:
        return json.dumps({"token": token, **fields}).encode() + b"\n"

    replies = await _raw_control(
        server.control_port,
        b"{not json\n",
        b"[1, 2]\n",
        b"\xff\xfe\n",
        req(op="explode"),
        req(op="set"),
        req(op="set", faults={"ttl": -5}),
        req(op="set", faults={"poison": "999.1.1.1"}),
        req(op="set", faults={"servfail": True, "refused": True}),
        req(op="get"),
    )
    assert [r["ok"] for r in replies] == [False] * 8 + [True]
    assert "invalid JSON" in replies[0]["error"]
    assert "JSON object" in replies[1]["error"]
    assert "invalid JSON" in replies[2]["error"]
    assert "unknown op" in replies[3]["error"]
    assert '"faults"' in replies[4]["error"]
    assert "ttl" in replies[5]["error"]
    assert "poison" in replies[6]["error"]
    assert "exclude each other" in replies[7]["error"]
    # wrong token: error, then the connection is closed
    replies = await _raw_control(
        server.control_port, b'{"token": "x", "op": "get"}\n', req(op="get")
    )
    assert replies == [{"ok": False, "error": "unauthorized: missing or wrong token"}]
    # over-long line: error, connection closed; the server still works
    replies = await _raw_control(server.control_port, b'{"pad": "' + b"a" * 20000 + b'"}\n')
    assert replies[0]["ok"] is False and "too long" in replies[0]["error"]
    assert await ChaosControlClient(HOST, server.control_port, token).get() == Faults()
    assert server.faults == Faults()


async def test_control_client_reports_connection_errors() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    with pytest.raises(ChaosControlError, match=f"{HOST}:{port}"):
        await ChaosControlClient(HOST, port, "t" * 20, timeout=1).get()


# -- fabric file ------------------------------------------------------------------------------


def test_fabric_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fabric.json"
    endpoint = ResolverEndpoint(HostPort("127.0.0.1", 5301), HostPort("127.0.0.1", 6301), "tok-1")
    write_fabric_resolvers(path, {"r1": endpoint})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_fabric_resolvers(path) == {"r1": endpoint}
    assert "tok-1" not in repr(endpoint)
    # other sections survive a rewrite
    data = json.loads(path.read_text())
    data["nats"] = {"url": "nats://127.0.0.1:4222"}
    path.write_text(json.dumps(data))
    write_fabric_resolvers(path, {"r2": endpoint})
    data = json.loads(path.read_text())
    assert data["nats"] == {"url": "nats://127.0.0.1:4222"}
    assert list(data["resolvers"]) == ["r2"]
    assert HostPort.parse("[::1]:53") == HostPort("::1", 53)
    assert str(HostPort("::1", 53)) == "[::1]:53"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", 'no "resolvers"'),
        ('{"resolvers": {"r1": 5}}', "not an object"),
        (
            '{"resolvers": {"r1": {"dns": "127.0.0.1", "control": "1.2.3.4:1", "token": "t"}}}',
            "HOST:PORT",
        ),
        ('{"resolvers": {"r1": {"dns": "127.0.0.1:53", "control": "1.2.3.4:1"}}}', "token"),
        (" " * (MAX_FILE_BYTES + 1), f"larger than {MAX_FILE_BYTES} bytes"),  # the one size cap
        ("[" * 200_000, "not valid JSON"),
    ],
)
def test_fabric_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "fabric.json"
    path.write_text(content)
    with pytest.raises(FabricFileError, match=message):
        load_fabric_resolvers(path)


def test_fabric_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FabricFileError, match="cannot read fabric file"):
        load_fabric_resolvers(tmp_path / "nope.json")


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "t.token"
    write_token_file(path, "abc-DEF_123")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token_file(path) == "abc-DEF_123"
    path.write_text("has space\n")
    with pytest.raises(ConfigError, match="token file"):
        read_token_file(path)
    path.write_text("t" * 5000)
    with pytest.raises(ConfigError, match="larger than 4096 bytes"):
        read_token_file(path)
    # the writers replace atomically through fresh temp names, never a fixed one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.token"]


def test_every_error_the_chaos_cli_catches_is_a_cctf_error() -> None:
    for error in (FabricFileError, ChaosControlError, FaultError):
        assert issubclass(error, CctfError)


# -- CLI --------------------------------------------------------------------------------------


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cctf",
        "chaos",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_set_and_status_through_the_fabric_file(
    server: FaultyDnsServer, tmp_path: Path
) -> None:
    fabric = tmp_path / "fabric.json"
    write_fabric_resolvers(
        fabric,
        {
            "r1": ResolverEndpoint(
                HostPort(HOST, server.port),
                HostPort(HOST, server.control_port),
                server.control_token,
            ),
            "dead": ResolverEndpoint(HostPort(HOST, 9), HostPort(HOST, 9), "dead-token"),
        },
    )
    sel = ["--fabric", str(fabric), "--resolver", "r1"]

    code, out, err = await run_cli("set", *sel, "--poison", FORGED, "--ttl", "5", cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == f"r1: faults poison={FORGED},ttl=5"
    response = await udp(server, "www.demo.test.")
    assert addresses(response) == [FORGED] and response.answer[0].ttl == 5

    code, out, err = await run_cli("status", *sel, "--json", cwd=tmp_path)
    assert code == 0, err
    status = json.loads(out)
    assert status["ok"] is True and status["faults"]["poison"] == FORGED
    assert status["stats"]["served"]["poison"] == 1

    code, out, err = await run_cli("set", *sel, "--clear", "--json", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["faults"] == Faults().to_dict()
    assert server.faults == Faults()

    # the default fabric path is .cctf/fabric.json under the working directory
    (tmp_path / ".cctf").mkdir()
    fabric.rename(tmp_path / ".cctf" / "fabric.json")
    code, out, err = await run_cli("set", "--resolver", "r1", "--blackhole", cwd=tmp_path)
    assert code == 0, err
    assert server.faults == Faults(blackhole=True)

    # --all: one line per resolver; the dead one fails, so exit 1
    code, out, err = await run_cli("status", "--all", cwd=tmp_path)
    assert code == 1
    assert out.startswith("r1: faults blackhole;")
    assert "dead: error:" in err
    assert server.control_token not in out + err


async def test_cli_control_selector(server: FaultyDnsServer, tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    write_token_file(token_file, server.control_token)
    sel = ["--control", f"{HOST}:{server.control_port}", "--token-file", str(token_file)]
    code, out, err = await run_cli("set", *sel, "--servfail", "--delay-ms", "1", cwd=tmp_path)
    assert code == 0, err
    assert server.faults == Faults(servfail=True, delay_ms=1)
    code, out, err = await run_cli("status", *sel, cwd=tmp_path)
    assert code == 0, err
    assert out.startswith(f"{HOST}:{server.control_port}: faults servfail,delay_ms=1;")


async def test_cli_failures_and_usage_errors(
    server: FaultyDnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit codes 1 and 2, run in-process (in a thread: the CLI runs its own event loop)."""
    token_file = tmp_path / "tok"
    write_token_file(token_file, server.control_token)
    control = f"{HOST}:{server.control_port}"
    sel = ["--control", control, "--token-file", str(token_file)]
    bad_token = tmp_path / "bad"
    write_token_file(bad_token, "wrong-token")

    async def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(cli_main, ["chaos", *args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await cli(
        "set", "--control", control, "--token-file", str(bad_token), "--refused"
    )
    assert code == 1
    assert "unauthorized" in err
    code, out, err = await cli(
        "status", "--control", control, "--token-file", str(bad_token), "--json"
    )
    assert code == 1
    assert json.loads(out)["ok"] is False
    assert server.faults == Faults()

    usage_errors = [
        ["set", *sel],  # nothing to set
        ["set", *sel, "--servfail", "--refused"],  # argparse: mutually exclusive
        ["set", *sel, "--poison", "not-an-ip"],
        ["set", *sel, "--clear", "--ttl", "5"],
        ["set", *sel, "--ttl", "-1"],
        ["set", "--control", control, "--clear"],  # no token file
        ["set", "--control", "no-port", "--token-file", str(token_file), "--clear"],
        ["set", "--fabric", str(tmp_path / "missing.json"), "--resolver", "r1", "--clear"],
        ["status", *sel, "--resolver", "r1"],
        ["status"],  # no selector
    ]
    for args in usage_errors:
        code, out, err = await cli(*args)
        assert code == 2, (args, out, err)
        assert err.strip(), args
    assert server.faults == Faults()


async def test_cli_serve_runs_until_sigterm(tmp_path: Path) -> None:
    token_file = tmp_path / "serve.token"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cctf", "chaos", "serve", "--poison", FORGED, "--ttl", "3",
        "--token-file", str(token_file),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines: dict[str, str] = {}
        while len(lines) < 4:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "serve exited early"
            key, _, value = line.strip().partition(" ")
            lines[key] = value
        dns_addr = HostPort.parse(lines["dns"].split()[0])
        control_addr = HostPort.parse(lines["control"])
        assert Path(lines["token-file"]) == token_file
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = read_token_file(token_file)
        assert token not in "".join(lines.values())
        query = dns.message.make_query("www.demo.test.", "A")
        response = await dns.asyncquery.udp(query, HOST, port=dns_addr.port, timeout=2)
        assert addresses(response) == [FORGED] and response.answer[0].ttl == 3
        response = await dns.asyncquery.tcp(query, HOST, port=dns_addr.port, timeout=2)
        assert addresses(response) == [FORGED]
        client = ChaosControlClient(HOST, control_addr.port, token)
        await client.clear()
        response = await dns.asyncquery.udp(query, HOST, port=dns_addr.port, timeout=2)
        assert addresses(response) == ["192.0.2.10"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
    assert not token_file.exists()
