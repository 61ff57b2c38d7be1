"""A free TCP port on 127.0.0.1, for a process started next to this one (a temporary
broker, a test's endpoint). Another process may take it before it is bound again: for
short-lived local setups, not for services."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
