"""EAP-TLS (802.1X, RADIUS) client certificates checked through DANCE (architecture-10 4.1.12).

FreeRADIUS's EAP-TLS ``verify { client = ... }`` hook runs ``dance-eap-verify`` for each client
certificate; the hook asks the verify daemon (``dance eap-verify-daemon``), which authenticates
the certificate as its single SAN dNSName through `dance.auth.Authenticator`.

``dance.eap.core``: the ClientName of a certificate, the identity binding, `check_certificate`.
``dance.eap.server``: the verify daemon (Unix socket, warm DNS and decision caches).
``dance.eap.protocol`` and ``dance.eap.client``: the daemon's one-line protocol and its client,
standard library only, for the hook.

Nothing is imported here, so that importing ``dance.eap.client`` stays cheap.
"""
