"""Running dance's servers as services: configuration files, access logs, metrics, workers.

Shared by every long-running command (``dance proxy``, ``smtp-proxy``, ``agent``, ``authority``,
``ssh-keys-daemon``); each adapter stays thin and calls these.
"""
