"""Provisioning DANCE identities: keys, certificates and CAs, and publishing their TLSA records.

* :mod:`dance.provision.identity` -- ``new_identity``: key (0600) + self-signed cert or CSR;
* :mod:`dance.provision.ca` -- device / user CAs (DANE-TA) and the certificates they issue;
* :mod:`dance.provision.publish` -- RFC 2136 + TSIG ``Updater``, ``wait_visible``;
* :mod:`dance.tsig` -- TSIG key files / ``$DANCE_TSIG_KEY``;
* :mod:`dance.provision.rollover` -- RFC 7671 section 8 key rollover;
* :mod:`dance.provision.fleet` -- fleet provisioning with tree-structured names;
* (the ``make demo`` step lives in :mod:`dance.demo.provision`)
"""

from dance.provision.identity import Identity, IdentityError, new_identity

__all__ = ["Identity", "IdentityError", "new_identity"]
