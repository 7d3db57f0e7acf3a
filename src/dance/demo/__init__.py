"""`dance demo` / `make demo`: the main job on the embedded default, part by part.

``core`` runs the offline part (A) and the DNS part (B) and calls each protocol's part:
provisioning (C), signed messages (D), DANCE over TLS (E), SSH (F), SMTP (G). Each part lives in
its own module here, so product packages carry no demo code.
"""

from dance.demo.core import run, run_dns, run_offline

__all__ = ["run", "run_dns", "run_offline"]
