"""DANCE for HTTPS APIs behind a TLS front end (architecture 4.1.1 and 4.1.2).

- `dance.http.headers`: strict parsing of certificate headers (nginx, RFC 9440, HAProxy);
- `dance.http.core`: the shared decision (`HttpAuth`), trusted proxies, identity headers;
- `dance.http.agent`: the ``dance agent`` service for nginx ``auth_request`` and HAProxy;
- `dance.http.asgi` / `dance.http.wsgi`: middleware; `dance.http.fastapi`: a dependency.

See docs/http.md.
"""

from dance.http.core import IDENTITY_HEADERS, Denied, HttpAuth, TrustedProxies
from dance.http.headers import CertificateHeaderParser, HeaderError, sole_dns_name

__all__ = [
    "IDENTITY_HEADERS",
    "CertificateHeaderParser",
    "Denied",
    "HeaderError",
    "HttpAuth",
    "TrustedProxies",
    "sole_dns_name",
]
