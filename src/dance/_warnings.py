"""Warnings of dependencies that say nothing to a dance user.

dnspython (2.9) still defines DNSSEC algorithms 3 and 6 (DSA), and touching ``dsa.DSAPublicKey``
makes cryptography (>= 51) warn that DSA is deprecated: eight lines on every command that imports
``dns.dnssec``. dance never signs or accepts DSA (RFC 8624 says MUST NOT), so the warning can only
confuse. It is silenced for that one module and that one message; every other warning, dance's
own included, is untouched (the tests run dance's modules under ``-W error``).

Every dance module that imports ``dns.dnssec`` imports this module first (a test checks it);
``import dance`` itself does not, so that the SSH key hook imports neither ``re`` nor anything else
it does not need.
"""

from __future__ import annotations

import warnings


def quiet_dependency_warnings() -> None:
    """Install the filter (idempotent: ``warnings`` keeps one copy); run at ``import dance``."""
    warnings.filterwarnings(
        "ignore", message=r"DSA is deprecated", category=Warning, module=r"dns\.dnssecalgs\.dsa"
    )


quiet_dependency_warnings()
