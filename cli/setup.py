"""`crawl2chat setup`: make the Prefect server at PREFECT_API_URL ready to run crawl2chat's
deployments (deployments/operations.py says what it creates). Run it again to change a setting: it
updates, never duplicates."""

from __future__ import annotations

import argparse
import sys

from cli.args import positive


def _zombie_after(text: str) -> float:
    from deployments.operations import HEARTBEAT_S

    value = float(text)
    # A window no longer than one heartbeat period would crash healthy runs between two heartbeats.
    if value <= HEARTBEAT_S:
        raise argparse.ArgumentTypeError(f"must be more than the {HEARTBEAT_S} s between heartbeats, got {value:g}")
    return value


def add_setup_parser(subparsers) -> None:
    from deployments.operations import ZOMBIE_AFTER_S

    p = subparsers.add_parser("setup", help="create the gpu concurrency limit and the alert and zombie-run "
                                            "automations on the Prefect server (PREFECT_API_URL)")
    p.add_argument("--webhook-url", help="POST a message here when a crawl2chat deployment's run fails or crashes")
    p.add_argument("--gpu-slots", type=positive, default=1,
                   help="training runs that may hold a GPU at once (the 'gpu' limit; default 1)")
    p.add_argument("--zombie-after-s", type=_zombie_after, default=ZOMBIE_AFTER_S,
                   help=f"crash a running run after this many seconds without a heartbeat (default {ZOMBIE_AFTER_S})")
    p.set_defaults(fn=cmd_setup)


def cmd_setup(args) -> int:
    from prefect.settings import PREFECT_API_URL

    from deployments.operations import setup

    if not PREFECT_API_URL.value():
        # Without it Prefect would set up a temporary server that is gone when this command ends.
        sys.exit("crawl2chat: setup needs a Prefect server: set PREFECT_API_URL "
                 "(e.g. http://127.0.0.1:4200/api after `prefect server start`)")
    for line in setup(args.webhook_url, args.gpu_slots, args.zombie_after_s):
        print(f"crawl2chat: {line}")
    return 0
