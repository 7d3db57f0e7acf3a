"""Verify a signed message and say who signed it: the key comes from DNS through the
Authenticator (allow-list, DNSSEC validation, TLSA matching), or from the embedded certificate
authenticated against the signer's TLSA records.

    verifier = MessageVerifier(authenticator)
    identity, payload = await verifier.verify(token)          # or raises MessageError

Name-only messages (no x5c / x5chain) need the full key in DNS: a ``3 1 0`` record (the
SubjectPublicKeyInfo) or ``3 0 0`` (the whole certificate). :meth:`MessageVerifier.published_keys`
is the helper that fetches them: it applies the Authenticator's allow-list before any query,
asks the Authenticator's DNSSEC-validating source, and keeps only a ``secure`` answer. The key
that verifies the signature is then presented to ``Authenticator.authenticate`` (as a raw public
key for ``3 1 0``, as a one-certificate chain for ``3 0 0``), so that the decision, its caching
and its counters are the Authenticator's own.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from dance.auth import Authenticator
from dance.credentials import Cert, CertificateChain, CredentialError, Presented, RawPublicKey
from dance.identity import Identity, Reason, Rejection
from dance.message.errors import MessageError, MessageReason
from dance.message.keys import allowed_algorithms
from dance.message.model import DEFAULT_LIMITS, Limits, ParsedMessage, VerifiedMessage
from dance.names import InvalidName, parse_client_name
from dance.tlsa.record import MalformedRecord, TLSARecord

__all__ = ["MessageVerifier", "PublishedKey", "parse_message"]

log = logging.getLogger(__name__)

_REJECTION_REASONS = {
    Reason.MALFORMED_INPUT: MessageReason.MALFORMED,
    Reason.NOT_ALLOWED: MessageReason.NOT_ALLOWED,
    Reason.DNS_INSECURE: MessageReason.DNS_INSECURE,
    Reason.DNS_BOGUS: MessageReason.DNS_BOGUS,
    Reason.DNS_SECURE_ABSENT: MessageReason.DNS_SECURE_ABSENT,
    Reason.NO_RECORDS: MessageReason.DNS_SECURE_ABSENT,
    Reason.DNS_INDETERMINATE: MessageReason.DNS_INDETERMINATE,
    Reason.NO_MATCH: MessageReason.KEY_NOT_PUBLISHED,
    Reason.NO_USABLE_RECORDS: MessageReason.KEY_NOT_PUBLISHED,
}
_DNS_OUTCOMES = {
    "insecure": MessageReason.DNS_INSECURE,
    "bogus": MessageReason.DNS_BOGUS,
    "secure-absent": MessageReason.DNS_SECURE_ABSENT,
    "indeterminate": MessageReason.DNS_INDETERMINATE,
}


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A public key published in full in a ``3 1 0`` or ``3 0 0`` TLSA record."""

    record: str  # "3 1 0" or "3 0 0"
    public_key: Any
    presented: Presented  # what to hand to Authenticator.authenticate for this key


def parse_message(token: str | bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse a JWS (compact or JSON) or a COSE_Sign1, by its first byte. Only MessageError."""
    try:
        if isinstance(token, bytes | bytearray) and token[:1] in (b"\xd2", b"\x84"):
            from dance.message.cose import parse_cose_sign1

            return parse_cose_sign1(bytes(token), limits)
        from dance.message.jose import parse_jws

        return parse_jws(token, limits)
    except MessageError:
        raise
    except Exception as exc:
        log.warning("unexpected error while parsing a message", exc_info=True)
        raise MessageError(MessageReason.INTERNAL, type(exc).__name__) from None


def _refused(result: Rejection, signer: str) -> MessageError:
    # name-mismatch, expired, bad-chain, bad-eku, ... are certificate-rejected
    reason = _REJECTION_REASONS.get(result.reason, MessageReason.CERTIFICATE_REJECTED)
    return MessageError(reason, f"{result.reason.value}: {result.detail}", signer)


def _published(records: tuple[bytes, ...]) -> tuple[PublishedKey, ...]:
    out: list[PublishedKey] = []
    for rdata in records:
        try:
            rec = TLSARecord.from_wire(rdata)
        except (MalformedRecord, ValueError):
            continue
        if rec.usage != 3 or rec.mtype != 0:
            continue
        try:
            if rec.selector == 1:
                rpk = RawPublicKey.from_spki(rec.data)
                key = serialization.load_der_public_key(rpk.spki)
                out.append(PublishedKey("3 1 0", key, rpk))
            elif rec.selector == 0:
                cert = Cert.from_der(rec.data)
                key = cert.certificate.public_key()
                out.append(PublishedKey("3 0 0", key, CertificateChain((cert,))))
        except (CredentialError, ValueError, TypeError):
            log.info("unusable full-data TLSA record skipped")
    return tuple(out)


class MessageVerifier:
    """Authenticate signed messages (JWS, COSE_Sign1) with an :class:`Authenticator`."""

    def __init__(
        self, authenticator: Authenticator, *, limits: Limits = DEFAULT_LIMITS, max_keys: int = 4096
    ) -> None:
        self.authenticator = authenticator
        self.limits = limits
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[tuple[bytes, ...], tuple[PublishedKey, ...]]] = (
            OrderedDict()
        )
        self._chains: OrderedDict[tuple[bytes, ...], tuple[CertificateChain, Any]] = OrderedDict()
        self.counters = {"verified": 0, "refused": 0}

    # -- the key-for-a-name helper -----------------------------------------------------------------

    def _keys_from(self, name: str, lookup: Any) -> tuple[PublishedKey, ...]:
        outcome = getattr(lookup.outcome, "value", str(lookup.outcome))
        if outcome != "secure":
            reason = _DNS_OUTCOMES.get(outcome, MessageReason.DNS_INDETERMINATE)
            raise MessageError(reason, f"DNS {outcome}: {lookup.reason}", name)
        records = tuple(lookup.records)
        if not records:
            raise MessageError(MessageReason.DNS_SECURE_ABSENT, "no TLSA records", name)
        hit = self._keys.get(name)
        if hit is not None and hit[0] == records:
            self._keys.move_to_end(name)
            return hit[1]
        keys = _published(records)
        self._keys[name] = (records, keys)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return keys

    @staticmethod
    def _signer(name: str) -> str:
        try:
            return parse_client_name(name).text
        except InvalidName as exc:
            raise MessageError(MessageReason.BAD_SIGNER_NAME, str(exc)) from None

    async def published_keys(self, name: str) -> tuple[PublishedKey, ...]:
        """The keys published in full (``3 1 0``, ``3 0 0``) for ``name``, from a DNSSEC
        ``secure`` answer. Policy and lookup are the Authenticator's (``lookup``): the
        allow-list first, no query for a name outside it."""
        name = self._signer(name)
        lookup = await self.authenticator.lookup(name)
        if isinstance(lookup, Rejection):
            raise _refused(lookup, name)
        return self._keys_from(name, lookup)

    def published_keys_cached(self, name: str) -> tuple[PublishedKey, ...] | None:
        name = self._signer(name)
        lookup = self.authenticator.lookup_cached(name)
        if isinstance(lookup, Rejection):
            raise _refused(lookup, name)
        return None if lookup is None else self._keys_from(name, lookup)

    # -- verification ------------------------------------------------------------------------------

    def parse(self, token: str | bytes) -> ParsedMessage:
        return parse_message(token, self.limits)

    async def verify(self, token: str | bytes) -> VerifiedMessage:
        """(Identity, payload) of an authenticated message, or MessageError with a reason."""
        try:
            msg = self.parse(token)
            presented: Presented
            if msg.x5c:
                presented = self._embedded(msg)
                result = await self.authenticator.authenticate(msg.signer, presented)
            else:
                presented = self._verify_name_only(msg, await self.published_keys(msg.signer))
                result = await self.authenticator.authenticate(msg.signer, presented)
            return self._finish(msg, result)
        except MessageError as exc:
            self.counters["refused"] += 1
            log.info("message refused: %s", exc)
            raise
        except Exception as exc:
            self.counters["refused"] += 1
            log.warning("unexpected error while verifying a message", exc_info=True)
            raise MessageError(MessageReason.INTERNAL, type(exc).__name__) from None

    def verify_cached(self, token: str | bytes) -> VerifiedMessage | None:
        """Like :meth:`verify` from caches only (no I/O); None when a DNS lookup is needed."""
        try:
            msg = self.parse(token)
            presented: Presented
            if msg.x5c:
                presented = self._embedded(msg)
            else:
                keys = self.published_keys_cached(msg.signer)
                if keys is None:
                    return None
                presented = self._verify_name_only(msg, keys)
            result = self.authenticator.authenticate_cached(msg.signer, presented)
            if result is None:
                return None
            return self._finish(msg, result)
        except MessageError:
            self.counters["refused"] += 1
            raise
        except Exception as exc:
            self.counters["refused"] += 1
            log.warning("unexpected error while verifying a message", exc_info=True)
            raise MessageError(MessageReason.INTERNAL, type(exc).__name__) from None

    def _finish(self, msg: ParsedMessage, result: Identity | Rejection) -> VerifiedMessage:
        if isinstance(result, Rejection):
            raise _refused(result, msg.signer)
        self.counters["verified"] += 1
        return VerifiedMessage(result, msg.payload, msg.format, msg.alg, bool(msg.x5c))

    def _embedded(self, msg: ParsedMessage) -> CertificateChain:
        """The embedded chain, after checking the signature with its end entity's key."""
        admitted = self.authenticator.admit(self._signer(msg.signer))
        if isinstance(admitted, Rejection):  # policy first: no parsing for unlisted names
            raise _refused(admitted, msg.signer)
        hit = self._chains.get(msg.x5c)
        if hit is None:
            try:
                chain = CertificateChain.from_der(msg.x5c)
                key = chain.end_entity.certificate.public_key()
            except (CredentialError, ValueError) as exc:
                raise MessageError(MessageReason.MALFORMED, f"x5c: {exc}", msg.signer) from None
            self._chains[msg.x5c] = (chain, key)
            while len(self._chains) > 256:
                self._chains.popitem(last=False)
        else:
            chain, key = hit
        if msg.alg not in allowed_algorithms(key):
            raise MessageError(
                MessageReason.ALGORITHM_KEY_MISMATCH,
                f"{msg.alg} with a {type(key).__name__} certificate",
                msg.signer,
            )
        if not msg.verify_with(key):
            raise MessageError(MessageReason.BAD_SIGNATURE, "signature does not verify", msg.signer)
        return chain

    def _verify_name_only(self, msg: ParsedMessage, keys: tuple[PublishedKey, ...]) -> Presented:
        if not keys:
            raise MessageError(
                MessageReason.KEY_NOT_PUBLISHED,
                "no 3 1 0 or 3 0 0 record: send the certificate (x5c) or publish the key",
                msg.signer,
            )
        fitting = [k for k in keys if msg.alg in allowed_algorithms(k.public_key)]
        if not fitting:
            raise MessageError(
                MessageReason.ALGORITHM_KEY_MISMATCH,
                f"no key published for the name can use {msg.alg}",
                msg.signer,
            )
        for published in fitting:
            if msg.verify_with(published.public_key):
                return published.presented
        raise MessageError(
            MessageReason.BAD_SIGNATURE,
            "no key published for the name verifies the signature",
            msg.signer,
        )
