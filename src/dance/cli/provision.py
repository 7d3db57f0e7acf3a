"""Provisioning commands: identities, CAs, publication to DNS, revocation, rollover, fleets.

dance identity new NAME [--key-type ec-p256|ed25519|rsa-3072] [--csr] [--out-dir DIR] [--force]
dance identity show FILE
dance ca new --kind device|user --domain D [--out-dir DIR]
dance ca issue --ca-cert F --ca-key F (--name NAME | --csr F) [--user UID | --mailbox M]
dance publish NAME (--cert F | --spki F | --record "3 1 1 ..") --server H:P --zone Z [--wait]
dance revoke NAME [--cert F | --spki F | --record R | --all] --server H:P --zone Z [--wait]
dance rollover NAME --dir DIR --server H:P --zone Z [--unsafe-wait-seconds S]
dance fleet provision FILE --domain D --out-dir DIR (--server H:P | --zone-file)

TSIG keys come from --tsig-key-file FILE or $DANCE_TSIG_KEY, never from the command line.
The library code is in dance.provision; this module only parses, reads files and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from dance import certs
from dance.cli.common import (
    UsageError,
    _parse_server,
    client_name_arg,
    positive_float,
    positive_int,
    record_owner_arg,
    ttl_int,
)
from dance.provision.identity import IdentityError

__all__ = ["register"]

EXIT_OK, EXIT_NEGATIVE = 0, 1


# --- helpers ---------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _emit(args: argparse.Namespace, data: dict[str, Any], human: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, sort_keys=True))
    else:
        for line in human:
            print(line)


def _load_certs(path: str) -> list[x509.Certificate]:
    from dance.credentials import CredentialError, load_certificates

    try:
        return load_certificates(_read(path))
    except CredentialError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _tsig(args: argparse.Namespace) -> Any:
    from dance.tsig import TSIGError, load_tsig_key

    try:
        return load_tsig_key(args.tsig_key_file, name=args.tsig_key_name)
    except TSIGError as exc:
        raise UsageError(f"TSIG key: {exc}") from None


def _updater(args: argparse.Namespace, zone: str | None = None) -> Any:
    from dance.provision.publish import Updater

    if not args.server:
        raise UsageError("--server HOST:PORT is required (or --zone-file to print the records)")
    target = zone or args.zone
    if not target:
        raise UsageError("--zone ZONE is required")
    return Updater(_parse_server(args.server), target, _tsig(args), timeout=args.timeout)


def _add_server_options(p: argparse.ArgumentParser, *, zone_file: bool = True) -> None:
    g = p.add_argument_group("DNS update")
    g.add_argument("--server", metavar="HOST:PORT", help="primary server accepting RFC 2136")
    g.add_argument("--zone", metavar="ZONE", help="the zone to update")
    g.add_argument("--tsig-key-file", metavar="FILE", help="TSIG key (else $DANCE_TSIG_KEY)")
    g.add_argument("--tsig-key-name", metavar="NAME", help="which key of the file to use")
    g.add_argument("--ttl", type=ttl_int, default=300, help="record TTL (default 300 s)")
    g.add_argument("--timeout", type=positive_float, default=10.0, help="update timeout (s)")
    if zone_file:
        g.add_argument(
            "--zone-file", action="store_true", help="print the RRs instead of sending an update"
        )
    w = p.add_argument_group("waiting for validated visibility")
    w.add_argument("--wait", action="store_true", help="poll a DNSSEC-validated lookup")
    w.add_argument(
        "--deadline", type=positive_float, default=60.0, help="give up waiting after S s"
    )
    w.add_argument("--trust-anchor", metavar="FILE", help="DS/DNSKEY lines for the lookup")
    w.add_argument(
        "--lookup-server", metavar="HOST:PORT", help="server for the lookup (default --server)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _anchors(args: argparse.Namespace) -> Any:
    from dance.dns import AnchorError, TrustAnchors

    try:
        if args.trust_anchor:
            return TrustAnchors.from_file(args.trust_anchor)
        return TrustAnchors.builtin_root()
    except AnchorError as exc:
        raise UsageError(str(exc)) from None


def _wait(
    args: argparse.Namespace,
    expect: dict[str, set[bytes] | None],
    gone: dict[str, set[bytes]] | None = None,
) -> tuple[bool, dict[str, str]]:
    from dance.provision.publish import wait_visible

    server = _parse_server(args.lookup_server or args.server)
    # a wildcard owner (a device CA at *._device.D) is observed through a name it synthesizes
    expect = {_probe(o): v for o, v in expect.items()}
    gone = {_probe(o): v for o, v in (gone or {}).items()}
    ok, last = wait_visible(server, _anchors(args), expect, deadline=args.deadline, gone=gone)
    return ok, {o: r.outcome.value for o, r in last.items()}


WILDCARD_PROBE = "dance-wait-probe"


def _probe(owner: str) -> str:
    return f"{WILDCARD_PROBE}.{owner[2:]}" if owner.startswith("*.") else owner


def _say_before_waiting(args: argparse.Namespace, human: list[str]) -> list[str]:
    """Print what was already done before a long wait (it is done, whatever the wait brings)."""
    if getattr(args, "json", False):
        return human
    for line in human:
        print(line, flush=True)
    print(f"waiting up to {args.deadline:g} s for a validated lookup to agree ...", flush=True)
    return []


def _interrupted(args: argparse.Namespace, result: dict[str, Any], action: str, key: str) -> int:
    """Ctrl-C while waiting: the change is in the zone already; say so and stop."""
    result[key] = None
    result["interrupted"] = True
    if getattr(args, "json", False):
        print(json.dumps(result, sort_keys=True))
    else:
        print(
            f"dance {action}: interrupted while waiting: the update was accepted by the server; "
            "its visibility was not confirmed",
            file=sys.stderr,
        )
    return 130


def _update_failed(exc: Exception, args: argparse.Namespace, action: str) -> int:
    rcode = getattr(exc, "rcode", "error")
    if rcode == "notzone":  # detected locally, before sending: unusable input
        raise UsageError(str(exc))
    if args.json:
        print(json.dumps({"ok": False, "action": action, "rcode": rcode, "error": str(exc)}))
    else:
        print(f"{action} failed: {exc} (zone unchanged)", file=sys.stderr)
    return EXIT_NEGATIVE


# --- identity --------------------------------------------------------------------------------


def cmd_identity_new(args: argparse.Namespace) -> int:
    from dance.provision.identity import new_identity

    try:
        ident = new_identity(
            args.name,
            args.out_dir,
            key_type=args.key_type,
            csr=args.csr,
            force=args.force,
            days=args.days,
        )
    except IdentityError as exc:
        raise UsageError(str(exc)) from None
    human = [f"identity {ident.name} ({ident.key_type})", f"  key:  {ident.key_path} (0600)"]
    if ident.cert_path:
        human.append(f"  cert: {ident.cert_path} (self-signed, DANE-EE)")
    if ident.csr_path:
        human.append(f"  csr:  {ident.csr_path} (for the issuing CA / integrator)")
    human += ["publish:", f"  {ident.zone_line(args.ttl)}"]
    _emit(args, ident.to_dict(args.ttl), human)
    return EXIT_OK


def _describe(path: str) -> dict[str, Any]:
    """What FILE holds: a private key, certificate(s) or a CSR, and the records it needs."""
    from cryptography.hazmat.primitives import serialization

    from dance.provision.ca import ca_owner, csr_name, load_csr
    from dance.provision.identity import load_private_key
    from dance.tlsa import make_record

    data = _read(path)
    if b"PRIVATE KEY" in data:
        try:
            key = load_private_key(path)
        except IdentityError as exc:
            raise UsageError(str(exc)) from None
        record = make_record(key.public_key(), 3, 1, 1)
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        name = Path(path).name.removesuffix(".key").removesuffix(".next")
        return {
            "file": path,
            "kind": "private-key",
            "key_type": _key_kind(key.public_key()),
            "spki_bytes": len(spki),
            "names": [name],
            "records": [{"owner": name, "rdata": record.to_text()}],
        }
    if b"CERTIFICATE REQUEST" in data:
        try:
            csr = load_csr(data)
        except IdentityError as exc:
            raise UsageError(f"{path}: {exc}") from None
        record = make_record(csr.public_key(), 3, 1, 1)
        csr_owner = csr_name(csr)
        return {
            "file": path,
            "kind": "csr",
            "key_type": _key_kind(csr.public_key()),
            "names": [csr_owner] if csr_owner else [],
            "records": [{"owner": csr_owner, "rdata": record.to_text()}] if csr_owner else [],
            "note": "to be issued by a CA (its DANE-TA record covers it) or self-signed",
        }
    chain = _load_certs(path)
    cert = chain[0]
    names = _cert_names(cert)
    is_ca = _is_ca(cert)
    out: dict[str, Any] = {
        "file": path,
        "kind": "ca-certificate" if is_ca else "certificate",
        "key_type": _key_kind(cert.public_key()),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.subject == cert.issuer,
        "not_after": cert.not_valid_after_utc.isoformat(),
        "names": names,
        "chain_length": len(chain),
    }
    if is_ca:
        from dance.provision.ca import permitted_dns

        constraints = permitted_dns(cert)
        out["name_constraints"] = constraints
        recs = []
        for c in constraints:
            owner = (
                ca_owner("device", c.removeprefix("_device."))
                if c.startswith("_device.")
                else ca_owner("user", c)
            )
            recs.append({"owner": owner, "rdata": make_record(cert, 2, 0, 1).to_text()})
        out["records"] = recs
    elif cert.subject == cert.issuer:
        out["records"] = [
            {"owner": n, "rdata": make_record(cert.public_key(), 3, 1, 1).to_text()} for n in names
        ]
    else:
        out["records"] = []
        out["note"] = "CA-issued: authenticated by its CA's DANE-TA record (publish nothing)"
    return out


def _key_kind(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec-{key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    return type(key).__name__


def _cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def cmd_identity_show(args: argparse.Namespace) -> int:
    info = _describe(args.file)
    human = [f"{info['file']}: {info['kind']} ({info['key_type']})"]
    for key in ("subject", "issuer", "not_after", "name_constraints", "note"):
        if key in info:
            human.append(f"  {key.replace('_', ' ')}: {info[key]}")
    human.append(f"  names: {', '.join(info['names']) or '(none)'}")
    for r in info["records"]:
        human.append(f"  needs: {r['owner']}. IN TLSA {r['rdata']}")
    _emit(args, info, human)
    return EXIT_OK


# --- CAs -------------------------------------------------------------------------------------


def cmd_ca_new(args: argparse.Namespace) -> int:
    from dance.provision.ca import new_ca_files

    try:
        ca = new_ca_files(
            args.kind,
            args.domain,
            args.out_dir,
            key_type=args.key_type,
            days=args.days,
            force=args.force,
        )
    except IdentityError as exc:
        raise UsageError(str(exc)) from None
    human = [
        f"{ca.kind} CA for {ca.domain}",
        f"  key:  {ca.key_path} (0600)",
        f"  cert: {ca.cert_path}",
        "publish (DANE-TA):",
        f"  {ca.zone_line(args.ttl)}",
    ]
    _emit(args, ca.to_dict(args.ttl), human)
    return EXIT_OK


def cmd_ca_issue(args: argparse.Namespace) -> int:
    from dance.provision.ca import issue, load_csr
    from dance.provision.identity import load_private_key

    chain = _load_certs(args.ca_cert)
    try:
        ca_key = load_private_key(args.ca_key)
        csr = load_csr(_read(args.csr)) if args.csr else None
        issued = issue(
            chain[0],
            ca_key,
            args.out_dir,
            name=args.name,
            csr=csr,
            uid=args.user,
            mailbox=args.mailbox,
            domain=args.domain,
            key_type=args.key_type,
            days=args.days,
            force=args.force,
        )
    except IdentityError as exc:
        raise UsageError(str(exc)) from None
    human = [
        f"issued {'user ' + issued.user + ' @ ' if issued.user else ''}{issued.name}",
        f"  cert: {issued.cert_path} (with the CA certificate)",
    ]
    if issued.key_path:
        human.append(f"  key:  {issued.key_path} (0600)")
    human.append("  authenticated by the CA's DANE-TA record: nothing to publish per identity")
    _emit(args, issued.to_dict(), human)
    return EXIT_OK


# --- publish / revoke ------------------------------------------------------------------------


def _records_for(args: argparse.Namespace, *, required: bool) -> list[Any]:
    """The TLSA records named by --record / --cert / --spki, checked against each other."""
    from dance.cli.common import load_spki
    from dance.provision.publish import MismatchError, check_record_matches
    from dance.tlsa import MalformedRecord, TLSARecord, make_record

    cert = None
    if args.cert:
        chain = _load_certs(args.cert)
        cert = chain[0]
    spki = load_spki(args.spki) if args.spki else None
    if args.record:
        try:
            records = [TLSARecord.from_text(r) for r in args.record]
        except MalformedRecord as exc:
            raise UsageError(f"--record: {exc}") from None
        if cert is None and spki is None:
            if required and not args.unchecked:
                raise UsageError(
                    "--record needs --cert or --spki to check it against "
                    "(or --unchecked to publish it as given)"
                )
            return records
        for r in records:
            try:
                check_record_matches(r, certificate=cert, spki=spki)
            except MismatchError as exc:
                raise UsageError(f"refusing to publish: {exc}") from None
        return records
    if cert is not None:
        return [make_record(cert, 2, 0, 1) if _is_ca(cert) else make_record(cert, 3, 1, 1)]
    if spki is not None:
        return [make_record(spki, 3, 1, 1)]
    if required:
        raise UsageError("give --cert FILE, --spki FILE or --record RDATA")
    return []


def _add_record_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cert", metavar="FILE", help="certificate (CA certificate: 2 0 1)")
    p.add_argument(
        "--spki", metavar="FILE", help="public key (PEM/DER SPKI, or an OpenSSH .pub line): 3 1 1"
    )
    p.add_argument("--record", action="append", metavar='"U S M HEX"', help="TLSA RDATA")
    p.add_argument(
        "--unchecked", action="store_true", help="publish --record without a cert/key to check"
    )


def cmd_publish(args: argparse.Namespace) -> int:
    from dance.provision.publish import Change, UpdateError, zone_lines

    name = record_owner_arg(args.name)
    records = _records_for(args, required=True)
    change = Change(name, tuple(records))
    if args.zone_file:
        for line in zone_lines([change], args.ttl):
            print(line)
        return EXIT_OK
    updater = _updater(args)
    try:
        updater.publish([change], ttl=args.ttl, replace=args.replace)
    except UpdateError as exc:
        return _update_failed(exc, args, "publish")
    result: dict[str, Any] = {
        "ok": True,
        "action": "publish",
        "name": name,
        "records": [r.to_text() for r in records],
    }
    human = [f"published {name}. {args.ttl} IN TLSA {r.to_text()}" for r in records]
    code = EXIT_OK
    if args.wait:
        human = _say_before_waiting(args, human)
        try:
            ok, outcomes = _wait(args, {name: {r.to_wire() for r in records}})
        except KeyboardInterrupt:
            return _interrupted(args, result, "publish", "visible")
        result["visible"] = ok
        result["lookup"] = outcomes
        human.append(
            "visible (secure)"
            if ok
            else f"not visible before the deadline: {outcomes[_probe(name)]}"
        )
        code = EXIT_OK if ok else EXIT_NEGATIVE
    _emit(args, result, human)
    return code


def cmd_revoke(args: argparse.Namespace) -> int:
    from dance.provision.publish import Change, UpdateError, zone_lines

    name = record_owner_arg(args.name)
    records = _records_for(args, required=False)
    if not records and not args.all:
        raise UsageError("give the record(s) to remove (--cert/--spki/--record) or --all")
    if records and args.all:
        raise UsageError("--all removes every TLSA record of the name; give no record with it")
    if args.zone_file:
        if args.all:
            print(f"update delete {name}. TLSA")
        for line in zone_lines([Change(name, tuple(records))], args.ttl):
            print(f"update delete {line}")
        return EXIT_OK
    updater = _updater(args)
    try:
        if args.all:
            updater.revoke(owners=[name])
        else:
            updater.revoke([Change(name, tuple(records))])
    except UpdateError as exc:
        if exc.rcode == "NXRRSET":
            exc = UpdateError(exc.rcode, f"{name} has no TLSA records to revoke ({exc.rcode})")
        return _update_failed(exc, args, "revoke")
    result: dict[str, Any] = {"ok": True, "action": "revoke", "name": name}
    human = [f"revoked {'all TLSA records of ' + name if args.all else name}"]
    human += [f"  removed TLSA {r.to_text()}" for r in records]
    code = EXIT_OK
    if args.wait:
        human = _say_before_waiting(args, human)
        try:
            if args.all:
                ok, outcomes = _wait(args, {name: None})
            else:
                ok, outcomes = _wait(args, {}, gone={name: {r.to_wire() for r in records}})
        except KeyboardInterrupt:
            return _interrupted(args, result, "revoke", "gone")
        result["gone"] = ok
        result["lookup"] = outcomes
        human.append(
            f"gone ({outcomes.get(_probe(name))})"
            if ok
            else f"still visible: {outcomes.get(_probe(name))}"
        )
        code = EXIT_OK if ok else EXIT_NEGATIVE
    human.append(
        "note: verifiers may accept cached copies until the record's TTL expires (and a "
        "cache ignoring TTLs until its RRSIG expires); see docs/provisioning.md"
    )
    _emit(args, result, human)
    return code


# --- rollover --------------------------------------------------------------------------------


def cmd_rollover(args: argparse.Namespace) -> int:
    from dance.provision.publish import UpdateError, wait_visible
    from dance.provision.rollover import rollover

    name = client_name_arg(args.name)
    updater = _updater(args)
    confirm = None
    if args.wait:
        anchors = _anchors(args)
        server = _parse_server(args.lookup_server or args.server)

        def confirm(owner: str, record: Any, present: bool) -> bool:
            wire = {record.to_wire()}
            if present:
                ok, _ = wait_visible(server, anchors, {owner: wire}, deadline=args.deadline)
            else:
                ok, _ = wait_visible(
                    server, anchors, {}, gone={owner: wire}, deadline=args.deadline
                )
            return ok

    progress = None if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    try:
        report = rollover(
            name,
            args.dir,
            updater,
            ttl=args.ttl,
            unsafe_wait_seconds=args.unsafe_wait_seconds,
            key_type=args.key_type,
            confirm=confirm,
            on_step=progress,
        )
    except UpdateError as exc:
        return _update_failed(exc, args, "rollover")
    except IdentityError as exc:
        if exc.reason == "wait":
            print(f"rollover: {exc}", file=sys.stderr)
            return EXIT_NEGATIVE
        raise UsageError(str(exc)) from None
    human = [
        f"rolled over {name}",
        f"  old: TLSA {report.old_record.to_text()} (retired)",
        f"  new: TLSA {report.new_record.to_text()}",
        f"  waited {report.waited:.1f} s between pre-publishing and switching",
    ]
    _emit(args, report.to_dict(), human)
    return EXIT_OK


# --- fleet -----------------------------------------------------------------------------------


class _Bar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.start = time.monotonic()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / max(now - self.start, 1e-6)
        sys.stderr.write(
            f"\r{phase:>10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:,.0f}/s"
        )
        if done >= total:
            sys.stderr.write("\n")
            self.start = now
        sys.stderr.flush()

    def done(self) -> None:
        """End a bar cut short (Ctrl-C), so the next line starts clean."""
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_fleet_provision(args: argparse.Namespace) -> int:
    from dance.provision.fleet import (
        FleetInputError,
        FleetInterrupted,
        create_identities,
        parse_fleet,
        publish_fleet,
    )
    from dance.provision.publish import Change, UpdateError, zone_lines

    try:
        text = _read(args.file).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file}: not UTF-8 text ({exc.reason})") from None
    try:
        entries = parse_fleet(text, args.domain, depth=args.depth, width=args.width)
    except FleetInputError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not entries:
        raise UsageError(f"{args.file}: no device names")
    tsig = None
    if not args.zone_file:
        if not args.server:
            raise UsageError("--server HOST:PORT is required (or --zone-file)")
        tsig = _tsig(args)  # fail before creating any key
    bar = _Bar(args.progress or sys.stderr.isatty())
    t0 = time.monotonic()
    try:
        identities = create_identities(
            entries, args.out_dir, key_type=args.key_type, workers=args.workers, progress=bar
        )
    except IdentityError as exc:
        raise UsageError(str(exc)) from None
    except FleetInterrupted as stop:
        bar.done()
        print(
            f"dance fleet provision: interrupted: {stop.done} of {stop.total} identities are "
            f"complete in {args.out_dir}; nothing was published. Run the same command again to "
            "go on (existing identities are reused).",
            file=sys.stderr,
        )
        return 130
    t1 = time.monotonic()
    created = sum(1 for i in identities if i.created)
    if args.zone_file:
        for line in zone_lines([Change(i.owner, (i.record,)) for i in identities], args.ttl):
            print(line)
        return EXIT_OK
    from dance.provision.publish import Updater

    server = _parse_server(args.server)
    updaters: dict[str, Updater] = {}

    def updater_for(shard: str) -> Updater:
        zone = shard
        if zone not in updaters:
            updaters[zone] = Updater(server, zone, tsig, timeout=args.timeout)
        return updaters[zone]

    try:
        stats = publish_fleet(
            identities,
            updater_for,
            ttl=args.ttl,
            batch=args.batch,
            single_zone=None if args.per_shard_zones else (args.zone or args.domain),
            progress=bar,
        )
    except UpdateError as exc:
        return _update_failed(exc, args, "fleet publish")
    except FleetInterrupted as stop:
        bar.done()
        print(
            f"dance fleet provision: interrupted: {stop.done} of {stop.total} records were "
            "acknowledged by the server (an update in flight may or may not have been applied). "
            "Run the same command again to go on: records already published are skipped.",
            file=sys.stderr,
        )
        return 130
    t2 = time.monotonic()
    result = {
        "ok": True,
        "devices": len(entries),
        "identities_created": created,
        "identities_existing": len(identities) - created,
        "records_published": stats.published,
        "records_already_published": stats.skipped,
        "update_messages": stats.messages,
        "zones": stats.zones,
        "seconds_identities": round(t1 - t0, 3),
        "seconds_publish": round(t2 - t1, 3),
    }
    human = [
        f"fleet: {len(entries)} devices under {args.domain}",
        f"  identities: {created} created, {len(identities) - created} existing ({t1 - t0:.2f} s)",
        f"  records: {stats.published} published in {stats.messages} updates, "
        f"{stats.skipped} already published ({t2 - t1:.2f} s)",
    ]
    _emit(args, result, human)
    return EXIT_OK


# --- registration ----------------------------------------------------------------------------


def _key_type_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-type", choices=certs.KEY_KINDS, default="ec-p256", help="default ec-p256")


def register(sub: Any) -> None:
    # identity
    p = sub.add_parser("identity", help="create or inspect a client identity (key, cert, CSR)")
    isub = p.add_subparsers(dest="identity_command", required=True, parser_class=type(p))
    q = isub.add_parser("new", help="new key + self-signed certificate (DANE-EE) or CSR")
    q.add_argument("name", help="the ClientName, e.g. sensor7._device.example.com")
    _key_type_option(q)
    q.add_argument("--csr", action="store_true", help="write a CSR instead of a certificate")
    q.add_argument("--out-dir", default=".", metavar="DIR", help="where to write (default .)")
    q.add_argument("--force", action="store_true", help="overwrite existing files")
    q.add_argument("--days", type=positive_float, default=365, help="certificate validity (days)")
    q.add_argument("--ttl", type=ttl_int, default=300, help="TTL for the printed record")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_identity_new)
    q = isub.add_parser("show", help="what a key/cert/CSR file is and which records it needs")
    q.add_argument("file")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_identity_show)

    # ca
    p = sub.add_parser("ca", help="organization device CAs and domain user CAs")
    csub = p.add_subparsers(dest="ca_command", required=True, parser_class=type(p))
    q = csub.add_parser("new", help="a name-constrained CA and its DANE-TA record")
    q.add_argument("--kind", choices=("device", "user"), required=True)
    q.add_argument("--domain", required=True, help="the organization / user domain D")
    _key_type_option(q)
    q.add_argument("--out-dir", default=".", metavar="DIR")
    q.add_argument("--days", type=positive_float, default=3650, help="CA validity (days)")
    q.add_argument("--force", action="store_true", help="overwrite existing files")
    q.add_argument("--ttl", type=ttl_int, default=300, help="TTL for the printed record")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_ca_new)
    q = csub.add_parser("issue", help="issue a device or user certificate")
    q.add_argument("--ca-cert", required=True, metavar="FILE")
    q.add_argument("--ca-key", required=True, metavar="FILE")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--name", help="device ClientName (or _user.D for a user)")
    src.add_argument("--csr", metavar="FILE", help="issue for this CSR's key")
    who = q.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="UID", help="user certificate with this uid")
    who.add_argument("--mailbox", metavar="ADDR", help="user certificate with this mailbox")
    q.add_argument("--domain", help="user domain (default: from --name _user.D or the CA)")
    _key_type_option(q)
    q.add_argument("--out-dir", default=".", metavar="DIR")
    q.add_argument("--days", type=positive_float, default=365, help="certificate validity (days)")
    q.add_argument("--force", action="store_true", help="overwrite existing files")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_ca_issue)

    # publish / revoke
    p = sub.add_parser("publish", help="publish TLSA records with a TSIG-signed RFC 2136 update")
    p.add_argument("name", help="the owner name (ClientName, or *._device.D for a CA)")
    _add_record_options(p)
    p.add_argument("--replace", action="store_true", help="replace the name's TLSA RRset")
    _add_server_options(p)
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("revoke", help="remove TLSA records (revocation is removal)")
    p.add_argument("name", help="the owner name")
    _add_record_options(p)
    p.add_argument("--all", action="store_true", help="remove every TLSA record of the name")
    _add_server_options(p)
    p.set_defaults(func=cmd_revoke)

    # rollover
    p = sub.add_parser("rollover", help="key rollover: pre-publish, wait 2 x TTL, switch, retire")
    p.add_argument("name", help="the ClientName")
    p.add_argument("--dir", default=".", help="directory of NAME.key / NAME.pem (default .)")
    _key_type_option(p)
    p.add_argument(
        "--unsafe-wait-seconds",
        type=float,
        metavar="S",
        help="wait S s instead of 2 x TTL (tests only: cached old RRsets then break clients)",
    )
    _add_server_options(p, zone_file=False)
    p.set_defaults(func=cmd_rollover)

    # fleet
    p = sub.add_parser("fleet", help="provision many devices")
    fsub = p.add_subparsers(dest="fleet_command", required=True, parser_class=type(p))
    q = fsub.add_parser("provision", help="identities in parallel + batched publication")
    q.add_argument("file", help="device names, one per line or CSV (first column)")
    q.add_argument("--domain", required=True, help="organization domain D")
    q.add_argument("--out-dir", default=".", metavar="DIR")
    _key_type_option(q)
    q.add_argument("--depth", type=positive_int, default=2, help="tree levels (default 2)")
    q.add_argument("--width", type=positive_int, default=1, help="hex digits per level (default 1)")
    q.add_argument("--workers", type=positive_int, help="processes (default: CPU count)")
    q.add_argument(
        "--batch", type=positive_int, default=400, help="records per UPDATE (default 400)"
    )
    q.add_argument(
        "--per-shard-zones", action="store_true", help="each shard is its own delegated zone"
    )
    q.add_argument("--progress", action="store_true", help="progress bar even without a TTY")
    _add_server_options(q)
    q.set_defaults(func=cmd_fleet_provision)
