"""A Knot DNS primary that signs online and accepts TSIG-signed updates (dance.testkit.servers)."""

from __future__ import annotations

from dance.testkit.servers import SOA, Primary, start_primary

__all__ = ["SOA", "Primary", "start_primary"]
