"""A ctypes bridge from Python's ``ssl`` module to the OpenSSL it links, for DANCE over TLS.

What it adds to a standard ``ssl.SSLContext``:

* a certificate verify callback (``SSL_CTX_set_cert_verify_callback``): the presented chain is
  handed to the DANCE decision instead of a CA store (accept-then-decide);
* the ``dane_clientid`` extension (draft-ietf-dance-client-auth-13) through
  ``SSL_CTX_add_custom_ext`` with context CertificateRequest | Certificate | TLS 1.3 only: the
  server sends a zero-length ClientName (``00``) in its CertificateRequest; the client sends its
  ClientName in the first CertificateEntry only, and only when the CertificateRequest carried it;
* per-connection state reached from OpenSSL ex_data: each ``SSL`` carries a never-reused serial
  number, which indexes a registry entry removed when the ``SSLObject`` is collected (no map keyed
  by a pointer: ``SSL*`` addresses are reused after free).

Start-up self-checks (``BridgeError`` when one fails, before any connection is served): the
``libssl.so.3`` that ``_ssl`` links is found in /proc/self/maps and its version equals
``ssl.OPENSSL_VERSION``; the ``SSL_CTX*`` read at offset 16 of an ``ssl.SSLContext`` is confirmed by
``SSL_CTX_get_options`` and ``SSL_CTX_get_verify_mode``; the ``SSL*`` read at offset 24 of
``SSLObject._sslobj`` is confirmed by ``SSL_get_SSL_CTX`` and ``SSL_is_server`` for every
connection. Python exceptions never cross into C callbacks; ctypes callback objects are kept alive
by the context they are installed on.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import itertools
import logging
import os
import ssl
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SSL_CTX_OFFSET = 16  # right after the PyObject header on 64-bit CPython (engineering notes)
SSL_OFFSET = 24  # PySSLSocket: PyObject header, weakref to the socket, then SSL*

DEFAULT_CODEPOINT = 0xFFDC  # private use (RFC 8446 section 11); switch once IANA assigns one
FORBIDDEN_CODEPOINT = 0xFF01  # renegotiation_info: never

SSL_EXT_TLS1_3_ONLY = 0x0020
SSL_EXT_TLS1_3_CERTIFICATE = 0x1000
SSL_EXT_TLS1_3_CERTIFICATE_REQUEST = 0x4000
EXT_CONTEXT = SSL_EXT_TLS1_3_CERTIFICATE_REQUEST | SSL_EXT_TLS1_3_CERTIFICATE | SSL_EXT_TLS1_3_ONLY

SSL_AD_HANDSHAKE_FAILURE = 40
SSL_AD_ILLEGAL_PARAMETER = 47
SSL_AD_DECODE_ERROR = 50
SSL_AD_INTERNAL_ERROR = 80
X509_V_ERR_APPLICATION_VERIFICATION = 50
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_SESS_CACHE_OFF = 0
SSL_VERIFY_NONE = 0
MAX_DISCARD = 64 * 1024  # bytes read and dropped from a refused client before closing

_ADD_CB = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,  # SSL *s
    ctypes.c_uint,  # ext_type
    ctypes.c_uint,  # context
    ctypes.POINTER(ctypes.c_void_p),  # const unsigned char **out
    ctypes.POINTER(ctypes.c_size_t),  # size_t *outlen
    ctypes.c_void_p,  # X509 *x
    ctypes.c_size_t,  # chainidx
    ctypes.POINTER(ctypes.c_int),  # int *al
    ctypes.c_void_p,  # add_arg
)
_PARSE_CB = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,  # SSL *s
    ctypes.c_uint,
    ctypes.c_uint,
    ctypes.c_void_p,  # const unsigned char *in
    ctypes.c_size_t,  # inlen
    ctypes.c_void_p,  # X509 *x
    ctypes.c_size_t,  # chainidx
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_void_p,
)
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class BridgeError(RuntimeError):
    """The running Python cannot be bridged to its OpenSSL safely."""


def check_codepoint(codepoint: int) -> int:
    """A ``dane_clientid`` codepoint: the default is private use (0xFF00-0xFFFF); any other
    ExtensionType is accepted for the day IANA assigns one, except 0xFF01 (renegotiation_info);
    OpenSSL itself refuses the types it implements (ValueError from the configure functions)."""
    if isinstance(codepoint, bool) or not isinstance(codepoint, int) or not 0 < codepoint <= 0xFFFF:
        raise ValueError(f"codepoint {codepoint!r} is not a TLS ExtensionType (1-65535)")
    if codepoint == FORBIDDEN_CODEPOINT:
        raise ValueError("codepoint 0xFF01 is renegotiation_info: refused")
    return codepoint


def encode_client_name(name: str) -> bytes:
    """``opaque ClientName<1..2^8-1>``: one length octet and the ASCII name (TV-EXT-2)."""
    raw = name.encode("ascii")
    if not 0 < len(raw) <= 255:
        raise ValueError("a ClientName has 1 to 255 octets")
    return bytes([len(raw)]) + raw


class ExtensionDecodeError(ValueError):
    """``extension_data`` of dane_clientid is not a well-formed ClientName."""


def decode_client_name(data: bytes) -> bytes:
    """The ClientName octets in ``extension_data`` (may be empty: a zero-length name)."""
    if not data:
        raise ExtensionDecodeError("empty extension_data")
    if data[0] != len(data) - 1:
        raise ExtensionDecodeError("length octet does not match the data")
    return data[1:]


# -- locating libssl --------------------------------------------------------------------------


def _libssl_mapped() -> str:
    """The soname of the libssl that ``_ssl`` has mapped into this process.

    The path in ``/proc/self/maps`` may end in ``(deleted)`` when a package upgrade replaced the
    file while this process runs; the library is then opened by soname with ``RTLD_NOLOAD``, which
    returns the copy already loaded and never a new one from disk.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) == 6 and "/libssl.so.3" in fields[5]:
                    return "libssl.so.3"
    except OSError as exc:
        raise BridgeError(f"cannot read /proc/self/maps: {exc}") from None
    raise BridgeError("Python's ssl module does not link libssl.so.3 dynamically")


def load_libssl() -> ctypes.CDLL:
    """The libssl shared by ``_ssl``, after checking that its version is the one ``ssl`` reports."""
    try:
        lib = ctypes.CDLL(_libssl_mapped(), mode=os.RTLD_NOLOAD)
    except OSError as exc:
        raise BridgeError(f"cannot open the libssl of the ssl module: {exc}") from None
    lib.OpenSSL_version.restype = ctypes.c_char_p
    lib.OpenSSL_version.argtypes = [ctypes.c_int]
    version = lib.OpenSSL_version(0)
    if not isinstance(version, bytes) or version.decode("ascii", "replace") != ssl.OPENSSL_VERSION:
        raise BridgeError(f"libssl version {version!r} differs from {ssl.OPENSSL_VERSION!r}")
    return lib


def ssl_ctx_pointer(lib: ctypes.CDLL, context: ssl.SSLContext) -> int:
    """The ``SSL_CTX*`` of ``context``, confirmed through its options and verify mode."""
    ptr = ctypes.c_void_p.from_address(id(context) + SSL_CTX_OFFSET).value
    if not ptr:
        raise BridgeError("no SSL_CTX at the expected offset")
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    if int(lib.SSL_CTX_get_options(ptr)) != int(context.options):
        raise BridgeError("layout self-check failed: SSL_CTX options do not match")
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    expected = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[context.verify_mode]
    if int(lib.SSL_CTX_get_verify_mode(ptr)) != expected:
        raise BridgeError("layout self-check failed: SSL_CTX verify mode does not match")
    return int(ptr)


def _proto(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    try:
        fn = getattr(lib, name)
    except AttributeError:
        raise BridgeError(f"libssl lacks {name}") from None
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


class _Lib:
    """Typed entry points of libssl/libcrypto used by the bridge."""

    def __init__(self) -> None:
        lib = load_libssl()
        vp, c_int, c_size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        self.lib = lib
        self.SSL_get_SSL_CTX = _proto(lib, "SSL_get_SSL_CTX", vp, vp)
        self.SSL_is_server = _proto(lib, "SSL_is_server", c_int, vp)
        self.SSL_set_verify = _proto(lib, "SSL_set_verify", None, vp, c_int, vp)
        self.SSL_set_ex_data = _proto(lib, "SSL_set_ex_data", c_int, vp, c_int, vp)
        self.SSL_get_ex_data = _proto(lib, "SSL_get_ex_data", vp, vp, c_int)
        self.CRYPTO_get_ex_new_index = _proto(
            lib, "CRYPTO_get_ex_new_index", c_int, c_int, ctypes.c_long, vp, vp, vp, vp
        )
        self.SSL_get_ex_data_X509_STORE_CTX_idx = _proto(
            lib, "SSL_get_ex_data_X509_STORE_CTX_idx", c_int
        )
        self.X509_STORE_CTX_get_ex_data = _proto(lib, "X509_STORE_CTX_get_ex_data", vp, vp, c_int)
        self.X509_STORE_CTX_get0_untrusted = _proto(lib, "X509_STORE_CTX_get0_untrusted", vp, vp)
        self.X509_STORE_CTX_get0_cert = _proto(lib, "X509_STORE_CTX_get0_cert", vp, vp)
        self.X509_STORE_CTX_set_error = _proto(lib, "X509_STORE_CTX_set_error", None, vp, c_int)
        self.OPENSSL_sk_num = _proto(lib, "OPENSSL_sk_num", c_int, vp)
        self.OPENSSL_sk_value = _proto(lib, "OPENSSL_sk_value", vp, vp, c_int)
        self.i2d_X509 = _proto(lib, "i2d_X509", c_int, vp, ctypes.POINTER(ctypes.c_void_p))
        self.SSL_CTX_set_cert_verify_callback = _proto(
            lib, "SSL_CTX_set_cert_verify_callback", None, vp, _VERIFY_CB, vp
        )
        self.SSL_CTX_add_custom_ext = _proto(
            lib,
            "SSL_CTX_add_custom_ext",
            c_int,
            vp,
            ctypes.c_uint,
            ctypes.c_uint,
            _ADD_CB,
            vp,
            vp,
            _PARSE_CB,
            vp,
        )
        self.SSL_CTX_ctrl = _proto(lib, "SSL_CTX_ctrl", ctypes.c_long, vp, c_int, ctypes.c_long, vp)
        self.d2i_X509_NAME = _proto(
            lib, "d2i_X509_NAME", vp, vp, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long
        )
        self.X509_NAME_free = _proto(lib, "X509_NAME_free", None, vp)
        self.OPENSSL_sk_new_null = _proto(lib, "OPENSSL_sk_new_null", vp)
        self.OPENSSL_sk_push = _proto(lib, "OPENSSL_sk_push", c_int, vp, vp)
        self.SSL_CTX_set_client_CA_list = _proto(lib, "SSL_CTX_set_client_CA_list", None, vp, vp)
        self.ex_index = int(self.CRYPTO_get_ex_new_index(0, 0, None, None, None, None))
        if self.ex_index < 0:
            raise BridgeError("SSL_get_ex_new_index failed")
        self.store_idx = int(self.SSL_get_ex_data_X509_STORE_CTX_idx())
        del c_size

    def chain_der(self, store: int) -> list[bytes]:
        """DER of the presented chain (leaf first) in an ``X509_STORE_CTX``."""
        out: list[bytes] = []
        stack = self.X509_STORE_CTX_get0_untrusted(store)
        certs: list[int] = []
        if stack:
            certs = [self.OPENSSL_sk_value(stack, i) for i in range(self.OPENSSL_sk_num(stack))]
        if not certs:
            leaf = self.X509_STORE_CTX_get0_cert(store)
            certs = [leaf] if leaf else []
        for x in certs:
            size = int(self.i2d_X509(x, None))
            if size <= 0:
                raise BridgeError("i2d_X509 failed")
            buf = ctypes.create_string_buffer(size)
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            self.i2d_X509(x, ctypes.byref(ptr))
            out.append(buf.raw)
        return out


_LIB_CELL: list[_Lib] = []
_LIB_LOCK = threading.Lock()


def bridge() -> _Lib:
    """The checked library handle (loaded once); raises BridgeError when unusable."""
    if _LIB_CELL:  # fast path: once loaded, never replaced
        return _LIB_CELL[0]
    with _LIB_LOCK:
        if not _LIB_CELL:
            _LIB_CELL.append(_Lib())
        return _LIB_CELL[0]


# -- per-connection state ------------------------------------------------------------------------


@dataclass(eq=False)
class ConnectionState:
    """What the callbacks learned about one connection (one ``SSL``)."""

    serial: int
    server_side: bool
    requested: bool = False  # client: the CertificateRequest carried dane_clientid
    sent_name: str | None = None  # client: the ClientName put in the Certificate, if any
    client_name: bytes | None = None  # server: the ClientName received (None: extension absent)
    from_san: bool = False  # server: the name was taken from the SAN (fallback)
    chain: list[bytes] = field(default_factory=list)
    identity: Any = None  # dance.identity.Identity once accepted
    rejection: Any = None  # dance.identity.Rejection or a reason string once refused
    pending: bool = False  # accepted provisionally: the full lookup must still run
    counted: bool = False  # a final outcome was counted
    handshake_done: bool = False
    verify_called: bool = False
    peer: str = "-"  # server: the client's address, for the access log (see CONNECTION_PEER)
    started: float = 0.0  # server: time.monotonic() at accept, for the access log


#: Set by a server around ``loop.start_tls`` so that the SSL object created for the connection
#: (in that task's context) records who the client is: (address text, monotonic time at accept).
CONNECTION_PEER: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "dance_connection_peer", default=None
)


class TLSStats:
    """Counters of TLS-level outcomes by reason (thread-safe enough for one event loop)."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        # Reentrant: the weakref finalizer of a connection (_finalize) counts here, and the
        # garbage collector may run it inside count() on the same thread. A plain Lock would
        # deadlock the event loop (it did, under openssl s_time -new).
        self._lock = threading.RLock()

    def count(self, key: str) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            if key.startswith("rejected_"):
                self.counters["rejected"] = self.counters.get("rejected", 0) + 1

    def get(self, key: str) -> int:
        return self.counters.get(key, 0)

    def __repr__(self) -> str:
        return f"TLSStats({self.snapshot()!r})"

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)


class _Registry:
    def __init__(self) -> None:
        self._serials = itertools.count(1)
        self._states: dict[int, ConnectionState] = {}
        # Reentrant: the garbage collector can run _finalize (which drops an entry) while new()
        # holds the lock on the same thread (allocating the state can trigger a collection).
        self._lock = threading.RLock()

    def new(self, server_side: bool) -> ConnectionState:
        with self._lock:
            state = ConnectionState(next(self._serials), server_side)
            self._states[state.serial] = state
            return state

    def get(self, serial: int | None) -> ConnectionState | None:
        if not serial:
            return None
        return self._states.get(serial)

    def drop(self, serial: int) -> None:
        with self._lock:
            self._states.pop(serial, None)

    def __len__(self) -> int:
        return len(self._states)


REGISTRY = _Registry()


def _finalize(serial: int, stats: TLSStats | None) -> None:
    state = REGISTRY.get(serial)
    REGISTRY.drop(serial)
    if (
        stats is not None
        and state is not None
        and state.server_side
        and not state.counted
        and not state.handshake_done
    ):
        stats.count("rejected_truncated")


class DanceSSLObject(ssl.SSLObject):
    """An ``SSLObject`` whose ``SSL`` carries a serial in ex_data (see the module docstring)."""

    dance_state: ConnectionState
    dance_stats: TLSStats | None
    _dance_error: ssl.SSLError | None = None
    _dance_incoming: ssl.MemoryBIO | None = None
    _dance_discarded = 0

    @classmethod
    def _create(
        cls,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
        context: ssl.SSLContext | None = None,
    ) -> DanceSSLObject:
        self = super()._create(  # type: ignore[misc]
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
            context=context,
        )
        assert isinstance(self, DanceSSLObject) and context is not None
        lib = bridge()
        ssl_ptr = ctypes.c_void_p.from_address(id(self._sslobj) + SSL_OFFSET).value  # type: ignore[attr-defined]
        ctx_ptr = getattr(context, "_dance_ctx_ptr", None)
        if (
            not ssl_ptr
            or lib.SSL_get_SSL_CTX(ssl_ptr) != ctx_ptr
            or bool(lib.SSL_is_server(ssl_ptr)) != bool(server_side)
        ):
            raise BridgeError("layout self-check failed: SSL* does not belong to the context")
        stats = getattr(context, "_dance_stats", None)
        state = REGISTRY.new(bool(server_side))
        peer = CONNECTION_PEER.get()
        if peer is not None:
            state.peer, state.started = peer
        if lib.SSL_set_ex_data(ssl_ptr, lib.ex_index, state.serial) != 1:
            REGISTRY.drop(state.serial)
            raise BridgeError("SSL_set_ex_data failed")
        self.dance_state = state
        self.dance_stats = stats
        self._dance_incoming = incoming
        weakref.finalize(self, _finalize, state.serial, stats)
        return self

    def do_handshake(self) -> None:
        failed = getattr(self, "_dance_error", None)
        if failed is not None:
            # Refused: the alert was flushed. Keep reading (and discarding) until the client
            # closes, so that closing never meets unread data, which would make the kernel
            # send a RST that can destroy the alert before the client reads it. Bounded by
            # MAX_DISCARD here and by the handshake timeout of the caller.
            incoming = self._dance_incoming
            if incoming is not None and not incoming.eof:
                self._dance_discarded += len(incoming.read())
                if self._dance_discarded <= MAX_DISCARD:
                    raise ssl.SSLWantReadError("refused; waiting for the client to close")
            raise _fresh(failed)
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._dance_failed(exc)
            if self.dance_state.server_side:
                # asyncio's SSLProtocol drops the pending output when the handshake fails, so
                # the client would never see the alert: report "want read" once, which makes
                # it flush the alert, and raise the real error on the next call (the client's
                # close, more data, or the handshake timeout).
                # Stored without its traceback (whose frame holds this object: a reference
                # cycle that keeps the connection's buffers until a full garbage collection).
                self._dance_error = _fresh(exc)
                del exc
                raise ssl.SSLWantReadError("alert pending") from None
            raise
        self.dance_state.handshake_done = True

    def _dance_failed(self, exc: ssl.SSLError) -> None:
        state, stats = self.dance_state, self.dance_stats
        if not state.server_side or state.counted or stats is None:
            return
        state.counted = True
        text = str(exc).lower()
        if "peer did not return a certificate" in text:
            stats.count("rejected_no-certificate")
        elif "unsupported protocol" in text or "protocol version" in text:
            stats.count("rejected_protocol-version")
        else:
            log.info("TLS handshake failed: %s", exc)
            stats.count("rejected_handshake-error")


def _fresh(exc: ssl.SSLError) -> ssl.SSLError:
    """A copy of ``exc`` without traceback or context (nothing that refers back to frames)."""
    copy = type(exc)(*exc.args)
    for attr in ("reason", "library", "verify_code", "verify_message"):
        if hasattr(exc, attr):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(copy, attr, getattr(exc, attr))
    return copy


def _state_of(ssl_ptr: int) -> ConnectionState | None:
    lib = bridge()
    serial = lib.SSL_get_ex_data(ssl_ptr, lib.ex_index)
    return REGISTRY.get(serial)


def _attach(context: ssl.SSLContext, name: str, value: object) -> None:
    keep = context.__dict__.setdefault("_dance_keep", [])
    keep.append(value)
    setattr(context, name, value)


# -- server side ---------------------------------------------------------------------------------

Decide = Callable[[ConnectionState], bool]
"""Decides inside the handshake (from the verify callback): True lets the handshake go on."""

_CR_SIGNAL = (ctypes.c_ubyte * 1)(0)  # extension_data of the CertificateRequest: ClientName ``00``


def configure_server(
    context: ssl.SSLContext, *, codepoint: int, decide: Decide, stats: TLSStats
) -> ssl.SSLContext:
    """Install dane_clientid and the verify callback on a server context.

    The context is made TLS 1.3 only, without tickets, requiring a client certificate. ``decide``
    is called with the connection state (``client_name`` and ``chain`` filled in); an exception
    in it refuses the client (it never reaches OpenSSL).
    """
    check_codepoint(codepoint)
    # DANCE required: TLS 1.3 only, no tickets (resumption would skip authentication), a client
    # certificate required. Enforced here too, for callers that build their own context.
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    context.verify_mode = ssl.CERT_REQUIRED
    lib = bridge()
    ctx_ptr = ssl_ctx_pointer(lib.lib, context)

    def add_cb(
        ssl_ptr: int,
        ext_type: int,
        ctx: int,
        out: Any,
        outlen: Any,
        x: int,
        chainidx: int,
        al: Any,
        arg: int,
    ) -> int:
        try:
            if ctx & SSL_EXT_TLS1_3_CERTIFICATE_REQUEST:
                out[0] = ctypes.addressof(_CR_SIGNAL)
                outlen[0] = 1
                return 1
            return 0
        except BaseException:  # never into C
            log.exception("dane_clientid add callback failed")
            al[0] = SSL_AD_INTERNAL_ERROR
            return -1

    def parse_cb(
        ssl_ptr: int,
        ext_type: int,
        ctx: int,
        data: int,
        length: int,
        x: int,
        chainidx: int,
        al: Any,
        arg: int,
    ) -> int:
        try:
            if not ctx & SSL_EXT_TLS1_3_CERTIFICATE:
                return 1
            state = _state_of(ssl_ptr)
            if state is None:
                al[0] = SSL_AD_INTERNAL_ERROR
                return 0
            raw = ctypes.string_at(data, length) if length else b""
            if chainidx != 0:
                state.rejection = "misplaced-extension"
                _count_reject(state, stats, "misplaced-extension")
                al[0] = SSL_AD_ILLEGAL_PARAMETER
                return 0
            try:
                state.client_name = decode_client_name(raw)
            except ExtensionDecodeError:
                state.rejection = "malformed-extension"
                _count_reject(state, stats, "malformed-extension")
                al[0] = SSL_AD_DECODE_ERROR
                return 0
            return 1
        except BaseException:
            log.exception("dane_clientid parse callback failed")
            al[0] = SSL_AD_INTERNAL_ERROR
            return 0

    def verify_cb(store: int, arg: int) -> int:
        try:
            ssl_ptr = lib.X509_STORE_CTX_get_ex_data(store, lib.store_idx)
            state = _state_of(ssl_ptr) if ssl_ptr else None
            if state is None:
                lib.X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
                return 0
            state.verify_called = True
            state.chain = lib.chain_der(store)
            if decide(state):
                return 1
        except BaseException:
            log.exception("certificate verify callback failed")
        lib.X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
        return 0

    c_add, c_parse, c_verify = _ADD_CB(add_cb), _PARSE_CB(parse_cb), _VERIFY_CB(verify_cb)
    _add_ext(lib, ctx_ptr, codepoint, c_add, c_parse)
    lib.SSL_CTX_set_cert_verify_callback(ctx_ptr, c_verify, None)
    lib.SSL_CTX_ctrl(ctx_ptr, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_OFF, None)
    _attach(context, "_dance_callbacks", (c_add, c_parse, c_verify))
    _attach(context, "_dance_ctx_ptr", ctx_ptr)
    _attach(context, "_dance_stats", stats)
    context.sslobject_class = DanceSSLObject
    return context


def announce_client_cas(context: ssl.SSLContext, subjects: Sequence[bytes]) -> ssl.SSLContext:
    """Name these CAs (DER-encoded X.509 subject names) in the server's CertificateRequest
    (TLS 1.3 ``certificate_authorities``; ``SSL_CTX_set_client_CA_list``), so that a client with
    several certificates picks one of theirs. A static list from configuration: with
    ``dane_clientid`` the client's name arrives after the CertificateRequest, so it cannot be
    derived from the name (dance-specs D7). Hints only: acceptance is decided as before.
    Raises ValueError for bytes that are not exactly one DER Name."""
    lib = bridge()
    ctx_ptr = ssl_ctx_pointer(lib.lib, context)
    stack = lib.OPENSSL_sk_new_null()
    if not stack:
        raise MemoryError("OPENSSL_sk_new_null")
    try:
        for der in subjects:
            buf = ctypes.c_char_p(bytes(der))
            start = ctypes.cast(buf, ctypes.c_void_p).value
            name = lib.d2i_X509_NAME(None, ctypes.byref(buf), len(der))
            used = (ctypes.cast(buf, ctypes.c_void_p).value or 0) - (start or 0)
            if not name or used != len(der):
                if name:
                    lib.X509_NAME_free(name)
                raise ValueError("not a DER-encoded X.509 name")
            if lib.OPENSSL_sk_push(stack, name) <= 0:
                lib.X509_NAME_free(name)
                raise MemoryError("OPENSSL_sk_push")
    except BaseException:
        _free_names(lib, stack)
        raise
    lib.SSL_CTX_set_client_CA_list(ctx_ptr, stack)  # the context owns the list from here
    return context


def _free_names(lib: _Lib, stack: int) -> None:
    for i in range(int(lib.OPENSSL_sk_num(stack))):
        lib.X509_NAME_free(lib.OPENSSL_sk_value(stack, i))
    _proto(lib.lib, "OPENSSL_sk_free", None, ctypes.c_void_p)(stack)


def _add_ext(lib: _Lib, ctx_ptr: int, codepoint: int, c_add: Any, c_parse: Any) -> None:
    if (
        lib.SSL_CTX_add_custom_ext(
            ctx_ptr, codepoint, EXT_CONTEXT, c_add, None, None, c_parse, None
        )
        != 1
    ):
        raise ValueError(
            f"OpenSSL refused codepoint {codepoint:#06x} (an extension it implements?)"
        )


def state_of(sslobj: object) -> ConnectionState | None:
    """The DANCE state of an ``SSLObject`` (``writer.get_extra_info("ssl_object")``)."""
    return getattr(sslobj, "dance_state", None)


def _count_reject(state: ConnectionState, stats: TLSStats, reason: str) -> None:
    if not state.counted:
        state.counted = True
        stats.count(f"rejected_{reason}")


# -- client side ---------------------------------------------------------------------------------


def configure_client(
    context: ssl.SSLContext,
    client_name: str | None,
    *,
    codepoint: int = DEFAULT_CODEPOINT,
    raw_extension: bytes | None = None,
    server_policy: ServerPolicy | None = None,
) -> ssl.SSLContext:
    """Install dane_clientid on a client context (TLS 1.3 only): ``client_name`` goes in the first
    entry of the Certificate message, and only when the server's CertificateRequest carried the
    extension. ``client_name=None``: never sent. ``raw_extension``: send these ``extension_data``
    bytes verbatim instead (tests of malformed input).

    The context works for asyncio (``SSLObject``) and for blocking sockets
    (``context.wrap_socket``, e.g. paho-mqtt): both send the name. ``server_policy`` (blocking
    sockets only; see :class:`DanceSSLSocket`) decides, before each handshake, how the server is
    authenticated, e.g. `dance.tls.dane.blocking_server_policy`."""
    check_codepoint(codepoint)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    lib = bridge()
    ctx_ptr = ssl_ctx_pointer(lib.lib, context)
    if raw_extension is not None:
        payload: bytes | None = bytes(raw_extension)
        shown = bytes(raw_extension).decode("ascii", "replace")
    elif client_name is not None:
        payload = encode_client_name(client_name)
        shown = client_name
    else:
        payload, shown = None, ""
    buffer = (ctypes.c_ubyte * max(1, len(payload or b""))).from_buffer_copy(payload or b"\0")

    def add_cb(
        ssl_ptr: int,
        ext_type: int,
        ctx: int,
        out: Any,
        outlen: Any,
        x: int,
        chainidx: int,
        al: Any,
        arg: int,
    ) -> int:
        try:
            if not ctx & SSL_EXT_TLS1_3_CERTIFICATE or chainidx != 0 or payload is None:
                return 0
            state = _state_of(ssl_ptr)
            if state is None or not state.requested:
                return 0
            out[0] = ctypes.addressof(buffer)
            outlen[0] = len(payload)
            state.sent_name = shown
            return 1
        except BaseException:
            log.exception("dane_clientid add callback failed")
            al[0] = SSL_AD_INTERNAL_ERROR
            return -1

    def parse_cb(
        ssl_ptr: int,
        ext_type: int,
        ctx: int,
        data: int,
        length: int,
        x: int,
        chainidx: int,
        al: Any,
        arg: int,
    ) -> int:
        try:
            if ctx & SSL_EXT_TLS1_3_CERTIFICATE_REQUEST:
                state = _state_of(ssl_ptr)
                if state is not None:
                    state.requested = True  # any content accepted (TC-P16, lenient)
            return 1
        except BaseException:
            log.exception("dane_clientid parse callback failed")
            al[0] = SSL_AD_INTERNAL_ERROR
            return 0

    c_add, c_parse = _ADD_CB(add_cb), _PARSE_CB(parse_cb)
    _add_ext(lib, ctx_ptr, codepoint, c_add, c_parse)
    _attach(context, "_dance_callbacks", (c_add, c_parse, buffer))
    _attach(context, "_dance_ctx_ptr", ctx_ptr)
    context.sslobject_class = DanceSSLObject
    context.sslsocket_class = DanceSSLSocket
    if server_policy is not None:
        if context.verify_mode != ssl.CERT_REQUIRED:
            # the policy may say "PKIX": a context that verifies nothing cannot provide it
            raise ValueError("a server policy needs a context that verifies the server (PKIX)")
        _attach(context, "_dance_server_policy", server_policy)
    return context


class ServerRejected(ConnectionError):
    """The server failed the client's check of it (DANE): nothing was sent to it."""


#: A check of a connected TLS connection (a ``StreamWriter``, ``SSLObject`` or ``SSLSocket``) run
#: after the handshake and before anything is sent: None to go on, or the reason the server is
#: not trusted.
ConnectionCheck = Callable[[Any], "str | None"]

#: Decides, before a blocking client handshake, how the server is authenticated:
#: ``(server_hostname, port) -> (check or None, whether PKIX verification applies)``; raises
#: `ServerRejected` to refuse the server before the handshake (e.g. a bogus DNS answer).
ServerPolicy = Callable[[str | None, int], tuple[ConnectionCheck | None, bool]]


class DanceSSLSocket(ssl.SSLSocket):
    """A blocking ``SSLSocket`` for DANCE client contexts (``context.wrap_socket``).

    Before its first handshake step it attaches the per-connection state that the dane_clientid
    callbacks need (the ClientName is sent as on asyncio connections), and, when the context has
    a server policy, asks it how to authenticate the server: for DANE, OpenSSL's own verification
    is turned off for this connection only (``SSL_set_verify``) and the policy's check of the
    presented chain runs when the handshake completes. A refused server is disconnected before
    the handshake returns, so the caller never sends it a byte; `ServerRejected` is raised."""

    dance_state: ConnectionState | None = None
    _dance_decided = False
    _dance_check: ConnectionCheck | None = None

    def _dance_ssl(self) -> int:
        sslobj = getattr(self, "_sslobj", None)
        if sslobj is None:
            raise BridgeError("no SSL object yet")
        ssl_ptr = ctypes.c_void_p.from_address(id(sslobj) + SSL_OFFSET).value
        lib = bridge()
        if (
            not ssl_ptr
            or lib.SSL_get_SSL_CTX(ssl_ptr) != getattr(self.context, "_dance_ctx_ptr", None)
            or lib.SSL_is_server(ssl_ptr)
        ):
            raise BridgeError("layout self-check failed: SSL* does not belong to the context")
        return int(ssl_ptr)

    def _dance_attach(self) -> None:
        if self.dance_state is not None or getattr(self, "_sslobj", None) is None:
            return
        lib = bridge()
        ssl_ptr = self._dance_ssl()
        state = REGISTRY.new(False)
        if lib.SSL_set_ex_data(ssl_ptr, lib.ex_index, state.serial) != 1:
            REGISTRY.drop(state.serial)
            raise BridgeError("SSL_set_ex_data failed")
        self.dance_state = state
        weakref.finalize(self, _finalize, state.serial, None)

    def _dance_decide(self) -> None:
        if self._dance_decided:
            return
        self._dance_decided = True
        policy: ServerPolicy | None = getattr(self.context, "_dance_server_policy", None)
        if policy is None:
            return
        port = int(self.getpeername()[1])
        check, use_pkix = policy(self.server_hostname, port)
        if not use_pkix:
            if check is None:  # neither DANE nor PKIX: never silently insecure
                raise ServerRejected("the server policy gave no way to authenticate the server")
            bridge().SSL_set_verify(self._dance_ssl(), SSL_VERIFY_NONE, None)
        self._dance_check = check

    def _dance_refuse(self) -> None:
        with contextlib.suppress(OSError):
            self.close()

    def do_handshake(self, block: bool = False) -> None:
        self._dance_attach()
        try:
            self._dance_decide()
        except BaseException:
            self._dance_refuse()
            raise
        super().do_handshake(block)
        check, self._dance_check = self._dance_check, None
        if check is not None:
            problem = check(self)
            if problem is not None:
                log.info("server refused: %s", problem)
                self._dance_refuse()
                raise ServerRejected(problem)
