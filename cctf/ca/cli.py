"""``cctf ca``: the agent-certificate CA (docs/ca.md).

::

    cctf ca init DIR --trust-domain TD --trust TRUST.json [--nats-credentials F --nats-user U]
        a THROWAWAY root + intermediate (demo, tests), the CA log key, DIR/ca.yaml
    cctf ca serve --config ca.yaml          answer certificate requests until SIGINT/SIGTERM
    cctf ca issue --agent-config agent.yaml one certificate for that agent, now (the agent's key
                                            and NATS user; writes the ca: section's cert_dir)
    cctf ca join --config ca.yaml --region R --agent A --out DIR [--lifetime-ms N]
                                            a one-time join credential (DIR/join.cert.pem +
                                            join.tls-key.pem) for an agent's first certificate
    cctf ca revoke --config ca.yaml (--serial S | --kid K) [--reason R]
                                            ask the running CA to revoke (admin subject)
    cctf ca list --config ca.yaml [--json]  every certificate and revocation in the CA log

Exit codes: 0 done, 1 refused / unreachable (one line on stderr), 2 invalid usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives import serialization

from cctf import telemetry
from cctf.ca.config import CaConfig, load_ca_config
from cctf.ca.entries import RevocationReason
from cctf.clock import SYSTEM_CLOCK
from cctf.crypto.keys import SigningKey, save_signing_key
from cctf.errors import CctfError, ConfigError
from cctf.util.files import write_file_atomic, write_secret_file

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ca", help="agent certificate authority", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="ca_command", metavar="ACTION")
    init = sub.add_parser("init", help="make a throwaway CA hierarchy and ca.yaml (demo, tests)")
    init.add_argument("dir", type=Path)
    init.add_argument("--trust-domain", required=True)
    init.add_argument("--trust", required=True, type=Path, help="the agents' trust config")
    init.add_argument("--nats-credentials", type=Path, default=None)
    init.add_argument("--nats-user", default="ca")  # least privilege (cctf.bus.accounts)
    init.set_defaults(func=_init)
    serve = sub.add_parser("serve", help="answer certificate requests until SIGINT/SIGTERM")
    serve.add_argument("--config", required=True, type=Path)
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(func=_serve)
    issue = sub.add_parser("issue", help="request one certificate for an agent now")
    issue.add_argument("--agent-config", required=True, type=Path)
    issue.set_defaults(func=_issue)
    join = sub.add_parser("join", help="a one-time join credential for a new agent (bootstrap)")
    join.add_argument("--config", required=True, type=Path)
    join.add_argument("--region", required=True)
    join.add_argument("--agent", required=True)
    join.add_argument("--out", required=True, type=Path, help="directory for the two PEM files")
    join.add_argument("--lifetime-ms", type=int, default=0, help="0: 10 min; at most 1 h")
    join.set_defaults(func=_join)
    revoke = sub.add_parser("revoke", help="revoke a certificate (serial) or a key's (kid)")
    revoke.add_argument("--config", required=True, type=Path)
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--serial", default="")
    what.add_argument("--kid", default="")
    revoke.add_argument(
        "--reason", default="unspecified", choices=[r.value for r in RevocationReason]
    )
    revoke.set_defaults(func=_revoke)
    lst = sub.add_parser("list", help="every certificate and revocation in the CA log")
    lst.add_argument("--config", required=True, type=Path)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)

    users = sub.add_parser(
        "tls-users", help="the agents' certificate-mapped NATS users minus revoked keys (ca.md §10)"
    )
    users.add_argument("--config", required=True, type=Path)
    users.add_argument("--json", action="store_true")
    users.set_defaults(func=_tls_users)

    def _usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    parser.set_defaults(func=_usage)


def _quiet() -> None:
    """Log lines (warnings and worse) on stderr: stdout is the command's JSON."""
    telemetry.configure_logging(json=True, level="warning")


def _fail(code: int, msg: str) -> int:
    print(f"cctf ca: {msg}", file=sys.stderr)
    return code


# ---- init ------------------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from cctf.ca.issuer import make_test_hierarchy
    from cctf.crypto.trust import TrustConfig
    from cctf.identity.errors import IdentityError
    from cctf.identity.spiffeid import check_trust_domain

    try:
        check_trust_domain(args.trust_domain)
        TrustConfig.load(args.trust)
    except (IdentityError, CctfError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    d: Path = args.dir
    d.mkdir(parents=True, exist_ok=True)
    h = make_test_hierarchy(args.trust_domain, now_ms=SYSTEM_CLOCK.now_ms())
    pem = serialization.Encoding.PEM

    def key_pem(k: Any) -> bytes:
        return bytes(
            k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )

    write_file_atomic(d / "root.pem", h.root.public_bytes(pem), mode=0o644)
    write_secret_file(d / "root.key.pem", key_pem(h.root_key))
    write_file_atomic(d / "intermediate.pem", h.intermediate.public_bytes(pem), mode=0o644)
    write_secret_file(d / "intermediate.key.pem", key_pem(h.intermediate_key))
    log_key = SigningKey.generate()
    save_signing_key(d / "ca-log.key.json", log_key)
    write_file_atomic(
        d / "ca-log.pub.json", json.dumps(log_key.public.to_json(), indent=1) + "\n", mode=0o644
    )
    config: dict[str, Any] = {
        "trust_domain": args.trust_domain,
        "intermediate": "intermediate.pem",
        "intermediate_key": "intermediate.key.pem",
        "log_key": "ca-log.key.json",
        "trust_file": str(args.trust.resolve()),
    }
    if args.nats_credentials is not None:
        config["nats"] = {
            "credentials": str(args.nats_credentials.resolve()),
            "user": args.nats_user,
        }
    write_file_atomic(d / "ca.yaml", json.dumps(config, indent=1) + "\n", mode=0o644)
    print(json.dumps({"dir": str(d), "config": str(d / "ca.yaml"), "log_kid": log_key.kid}))
    return EXIT_OK


# ---- NATS commands ---------------------------------------------------------------------------------


def _load(path: Path) -> CaConfig | int:
    try:
        config = load_ca_config(path)
        if config.nats is None:
            raise ConfigError("nats: required, the connection block")
        return config
    except CctfError as exc:
        return _fail(EXIT_USAGE, str(exc))


async def _connect(config: CaConfig, name: str) -> Any:
    from cctf.bus.connect import connect

    assert config.nats is not None
    return await connect(
        list(config.nats.resolve()[0]),
        config.nats.nats_user(),
        name=name,
        initial_retries=3,
        tls=config.nats.client_tls(),
    )


def _serve(args: argparse.Namespace) -> int:
    telemetry.configure_logging(json=True, level=args.log_level)
    config = _load(args.config)
    if isinstance(config, int):
        return config
    try:
        return asyncio.run(_serve_async(config))
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve_async(config: CaConfig) -> int:
    from cctf.ca.config import load_certificate, load_issuer_key
    from cctf.ca.issuer import Issuer
    from cctf.ca.log import open_ca_log
    from cctf.ca.registry import CertRegistry
    from cctf.ca.service import CaService

    try:
        issuer = Issuer(
            load_certificate(config.intermediate, "intermediate"),
            load_issuer_key(config.intermediate_key),
            config.trust_domain,
            config.load_trust(),
            chain=tuple(load_certificate(p, "chain") for p in config.chain),
            default_lifetime_ms=config.default_lifetime_ms,
            max_lifetime_ms=config.max_lifetime_ms,
        )
        log_key = config.load_log_key()
    except CctfError as exc:
        return _fail(EXIT_USAGE, str(exc))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        nc = await _connect(config, "cctf-ca")
    except Exception as exc:
        return _fail(EXIT_FAILED, f"cannot reach NATS: {exc!r}")
    try:
        registry = CertRegistry(issuer.intermediate, issuer.trust_domain, issuer.trust)
        log = await open_ca_log(nc, log_key, registry)
        service = CaService(
            nc, issuer, log, registry=registry, append_timeout_s=config.append_timeout_ms / 1000
        )
        await service.run_until(stop)
        log.close()
        return EXIT_OK
    except CctfError as exc:
        return _fail(EXIT_FAILED, str(exc))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), 2.0)


def _issue(args: argparse.Namespace) -> int:
    _quiet()
    from cctf.agents.config import load_agent_config

    try:
        agent = load_agent_config(args.agent_config)
        key = agent.load_key()
        if agent.ca is None:
            raise ConfigError(f"{args.agent_config}: no ca: section")
    except CctfError as exc:
        return _fail(EXIT_USAGE, str(exc))
    return asyncio.run(_issue_async(agent, key))


async def _issue_async(agent: Any, key: SigningKey) -> int:
    from cctf.bus.connect import connect
    from cctf.bus.rpc import RpcError
    from cctf.ca.errors import CaError
    from cctf.ca.renew import CertRenewer

    try:
        nc = await connect(
            list(agent.nats.urls), agent.nats.nats_user(), name="cctf-ca-issue", initial_retries=3
        )
    except Exception as exc:
        return _fail(EXIT_FAILED, f"cannot reach NATS: {exc!r}")
    try:
        r = CertRenewer(nc, key, agent=agent.agent, region=agent.region, config=agent.ca)
        cert = await r.obtain()
    except (CaError, RpcError) as exc:
        return _fail(EXIT_FAILED, str(exc))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
    out = {
        "serial": cert.serial,
        "spiffe_id": cert.spiffe_id,
        "kid": cert.binding.kid,
        "not_before_ms": cert.not_before_ms,
        "not_after_ms": cert.not_after_ms,
        "cert": str(r.cert_path),
        "key": str(r.key_path),
    }
    print(json.dumps(out))
    return EXIT_OK


def _join(args: argparse.Namespace) -> int:
    _quiet()
    from cryptography import x509

    from cctf.ca.client import new_tls_key

    config = _load(args.config)
    if isinstance(config, int):
        return config
    tls_key = new_tls_key()  # the join key: made here, handed to the agent host with the cert
    got = asyncio.run(_join_async(config, args, tls_key))
    if isinstance(got, int):
        return got
    join, resp = got
    pem = serialization.Encoding.PEM
    chain = b"".join(
        x509.load_der_x509_certificate(d).public_bytes(pem) for d in (join.der, *resp.chain)
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out / "join.tls-key.pem", out / "join.cert.pem"
    private = serialization.PrivateFormat.PKCS8
    write_secret_file(key_path, tls_key.private_bytes(pem, private, serialization.NoEncryption()))
    write_file_atomic(cert_path, chain, mode=0o644)
    done = {"serial": join.serial, "spiffe_id": join.spiffe_id, "not_after_ms": join.not_after_ms}
    print(
        json.dumps(
            done | {"log_index": resp.log_index, "cert": str(cert_path), "key": str(key_path)}
        )
    )
    return EXIT_OK


async def _join_async(config: CaConfig, args: argparse.Namespace, tls_key: Any) -> Any:
    from cctf.bus.rpc import RpcError, request
    from cctf.ca.client import make_csr
    from cctf.ca.config import load_certificate
    from cctf.ca.join import JoinRequest, parse_join_cert
    from cctf.ca.request import decode_response
    from cctf.ca.service import ADMIN_JOIN

    req = JoinRequest(args.region, args.agent, make_csr(tls_key, args.agent), args.lifetime_ms)
    try:
        intermediate = load_certificate(config.intermediate, "intermediate")
    except CctfError as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        nc = await _connect(config, "cctf-ca-join")
    except Exception as exc:
        return _fail(EXIT_FAILED, f"cannot reach NATS: {exc!r}")
    try:
        raw = await request(nc, ADMIN_JOIN, msgspec.msgpack.encode(req), timeout_s=10)
        resp = decode_response(raw)
        if resp.error:
            return _fail(EXIT_FAILED, resp.error)
        return parse_join_cert(resp.certificate, intermediate, config.trust_domain), resp
    except (RpcError, CctfError) as exc:
        return _fail(EXIT_FAILED, str(exc))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)


def _revoke(args: argparse.Namespace) -> int:
    _quiet()
    config = _load(args.config)
    if isinstance(config, int):
        return config
    return asyncio.run(_revoke_async(config, args.serial, args.kid, args.reason))


async def _revoke_async(config: CaConfig, serial: str, kid: str, reason: str) -> int:
    from cctf.bus.rpc import RpcError, request
    from cctf.ca.service import ADMIN_REVOKE, RevokeReply, RevokeRequest

    try:
        nc = await _connect(config, "cctf-ca-revoke")
    except Exception as exc:
        return _fail(EXIT_FAILED, f"cannot reach NATS: {exc!r}")
    try:
        req = RevokeRequest(serial, kid, RevocationReason(reason))
        raw = await request(nc, ADMIN_REVOKE, msgspec.msgpack.encode(req), timeout_s=10)
        reply = msgspec.msgpack.decode(raw, type=RevokeReply)
    except (RpcError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _fail(EXIT_FAILED, str(exc))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
    if reply.error:
        return _fail(EXIT_FAILED, reply.error)
    print(json.dumps({"revoked": reply.serials, "log_index": reply.log_index}))
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    _quiet()
    config = _load(args.config)
    if isinstance(config, int):
        return config
    return asyncio.run(_list_async(config, args.json))


async def _list_async(config: CaConfig, as_json: bool) -> int:
    from cctf.bus.logstream import read_records
    from cctf.ca.config import load_certificate
    from cctf.ca.entries import CertEntry, JoinEntry, decode_entry
    from cctf.ca.errors import CaError
    from cctf.ca.join import parse_join_cert
    from cctf.ca.log import CA_LOG_ID
    from cctf.ca.profile import parse_agent_cert
    from cctf.translog.errors import TranslogError
    from cctf.translog.logstate import log_origin
    from cctf.translog.mirror import LogMirror
    from cctf.translog.note import NoteVerifier

    try:
        intermediate = load_certificate(config.intermediate, "intermediate")
        public = config.load_log_key().public
    except CctfError as exc:
        return _fail(EXIT_USAGE, str(exc))
    origin = log_origin(public.kid)
    mirror = LogMirror(origin, NoteVerifier(origin, public))
    rows: list[dict[str, Any]] = []
    try:
        nc = await _connect(config, "cctf-ca-list")
    except Exception as exc:
        return _fail(EXIT_FAILED, f"cannot reach NATS: {exc!r}")
    try:
        async for stored in read_records(nc, CA_LOG_ID):
            first = mirror.size
            mirror.apply(stored.record)  # roots and checkpoint signatures checked
            for i, raw in enumerate(stored.record.entries, start=first):
                row: dict[str, Any] = {"index": i}
                try:
                    entry = decode_entry(raw)
                    if isinstance(entry, CertEntry):
                        c = parse_agent_cert(entry.der, intermediate, config.trust_domain)
                        row |= {
                            "type": "cert",
                            "serial": c.serial,
                            "kid": c.binding.kid,
                            "spiffe_id": c.spiffe_id,
                            "not_before_ms": c.not_before_ms,
                            "not_after_ms": c.not_after_ms,
                        }
                    elif isinstance(entry, JoinEntry):
                        j = parse_join_cert(entry.der, intermediate, config.trust_domain)
                        row |= {
                            "type": "join",
                            "serial": j.serial,
                            "spiffe_id": j.spiffe_id,
                            "not_before_ms": j.not_before_ms,
                            "not_after_ms": j.not_after_ms,
                        }
                    else:
                        row |= {
                            "type": "revoke",
                            "serial": entry.serial,
                            "kid": entry.kid,
                            "reason": entry.reason.value,
                            "revoked_ms": entry.revoked_ms,
                        }
                except CaError as exc:
                    row |= {"type": "invalid", "error": str(exc)[:200]}
                rows.append(row)
    except TranslogError as exc:
        return _fail(EXIT_FAILED, f"the CA log does not verify: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
    if as_json:
        root = mirror.root.hex()
        print(json.dumps({"log": {"size": mirror.size, "root": root}, "entries": rows}))
    else:
        for row in rows:
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    return EXIT_OK


def _tls_users(args: argparse.Namespace) -> int:
    """Exit 0 with the users (``--json``: ``{"log", "revoked", "users"}``); 2 for a bad config; 1
    when NATS cannot be reached or the CA log does not verify (nothing printed on stdout)."""
    _quiet()
    config = _load(args.config)
    if isinstance(config, int):
        return config
    return asyncio.run(_tls_users_async(config, args.json))


async def _tls_users_async(config: CaConfig, as_json: bool) -> int:
    from cctf.ca.log import read_ca_log
    from cctf.ca.tlsusers import agent_users, revoked_keys
    from cctf.translog.errors import TranslogError

    try:
        trust = config.load_trust()
        public = config.load_log_key().public
    except CctfError as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        nc = await _connect(config, "cctf-ca-tls-users")
    except Exception as exc:
        return _fail(EXIT_FAILED, f"cannot reach NATS: {exc!r}")
    try:
        mirror, entries = await read_ca_log(nc, public)
    except TranslogError as exc:
        return _fail(EXIT_FAILED, f"the CA log does not verify: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
    revoked = revoked_keys(trust, entries)
    users = agent_users(trust, config.trust_domain, revoked)
    if as_json:
        log = {"size": mirror.size, "root": mirror.root.hex()}
        doc = {"log": log, "revoked": list(revoked.values()), "users": users}
        print(msgspec.json.encode(doc).decode())
        return EXIT_OK
    for u in users:
        print(f"user={u.san} account={u.account}")
    for r in revoked.values():
        print(f"excluded={r.region}/{r.agent} kid={r.kid} reason={r.reason}")
    return EXIT_OK
