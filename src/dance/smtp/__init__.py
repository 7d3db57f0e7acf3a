"""SMTP relay authentication (architecture Example 10): `dance smtp-proxy` in front of Postfix.

* ``dance.smtp.framing``: the sans-I/O line discipline for commands and message text (bytes in,
  events out): a line ends only at CRLF, bare CR/LF and NUL are refused, the message ends only at
  CRLF . CRLF.
* ``dance.smtp.proxy``: the server: STARTTLS with ``dane_clientid``, then MAIL/RCPT/DATA relayed
  to Postfix with the identity given by ``XCLIENT LOGIN``.
"""

from dance.smtp.framing import Framer
from dance.smtp.proxy import (
    DEFAULT_MAX_SIZE,
    SmtpProxy,
    SmtpProxyConfig,
    SmtpProxyError,
    SmtpStats,
    start_smtp_proxy,
    xtext,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "Framer",
    "SmtpProxy",
    "SmtpProxyConfig",
    "SmtpProxyError",
    "SmtpStats",
    "start_smtp_proxy",
    "xtext",
]
