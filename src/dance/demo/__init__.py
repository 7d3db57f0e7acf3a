"""`dance demo` / `make demo`: the main job on the embedded default, part by part.

``core`` runs the offline part (A) and the DNS part (B) and calls each protocol's part:
provisioning (C), signed messages (D), DANCE over TLS (E), SSH (F), SMTP (G), LoRaWAN (H), MQTT
(I), LDAP (J), EAP-TLS (K), RadSec (L). Each part lives in its own module here, so product
packages carry no demo code. Parts that need a server binary (Mosquitto, slapd, FreeRADIUS and
eapol_test) say so and are skipped when it is missing.
"""

from dance.demo.core import run, run_dns, run_offline

__all__ = ["run", "run_dns", "run_offline"]
