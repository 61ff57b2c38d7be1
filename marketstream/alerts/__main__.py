"""``python -m marketstream.alerts test``: send a test message to every configured alert
channel (``ALERT_WEBHOOK_URL``, ``ALERT_EMAIL_TO``) and say what each one answered.
Exit status 0 when all took it, 1 when one failed, 2 when none is configured."""

from __future__ import annotations

import argparse
import socket
import sys

from marketstream.alerts.channels import configured_channels
from marketstream.alerts.messages import Message
from marketstream.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.alerts", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["test"], help="send a test message to every configured channel")
    parser.parse_args(argv)
    channels = configured_channels(get_settings())
    if not channels:
        print("no alert channel configured: set ALERT_WEBHOOK_URL (and/or ALERT_EMAIL_TO)", file=sys.stderr)
        return 2
    message = Message("[marketstream] test alert",
                      f"TEST marketstream: alerts from {socket.gethostname()} reach this channel. Nothing is broken.")
    failed = 0
    for channel in channels:
        try:
            channel.send(message)
            print(f"{channel.name}: sent")
        except Exception as exc:  # report every channel's answer, then the status
            failed += 1
            print(f"{channel.name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
