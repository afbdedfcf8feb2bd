"""``meterline relay``: run one member of a consumer group that ships a Kafka topic to an
HTTP destination (``meterline.relay.Relay``).

It runs until SIGTERM or SIGINT, then stops within ``--shutdown-timeout`` (a request in
flight is cut at that bound; what is not delivered is not committed and is sent again by
the group). Progress (delivered, rejected, committed, lag) goes to stderr every
``--progress-interval`` seconds. The API key comes from ``--api-key`` or
``METERLINE_API_KEY`` and is never printed.

Exit codes: 0 stopped on a signal; 2 a configuration error (including a topic that holds
another destination's format); 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from typing import Any

__all__ = ["add_relay"]

_SETTING = re.compile(r"[A-Za-z0-9._-]+")


def add_relay(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the ``relay`` subcommand."""
    parser = subparsers.add_parser(
        "relay",
        help="ship a Kafka topic to a billing platform, as a consumer group member",
        description="Consume --from as a member of --group and send each event (the exact "
        "bytes meterline's kafka destination wrote) to --to. Offsets are committed only "
        "after every event up to them was delivered or kept in the journal's rejected/; "
        "while the destination is down, events stay in Kafka. Run several for more "
        "throughput (one per partition at most).",
    )
    parser.add_argument(
        "--from", dest="source", required=True, help="kafka://host:port[,host:port]/topic"
    )
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument("--to", default="orb", help="destination (default: %(default)s)")
    parser.add_argument("--base-url", help="the destination's API base URL")
    parser.add_argument(
        "--api-key",
        help="the destination's API key (default: $METERLINE_API_KEY, which keeps it out "
        "of the process list); never printed",
    )
    parser.add_argument("--journal-dir", help="where rejected events are kept")
    parser.add_argument(
        "--max-rate", type=float, help="events/s for the whole group, split by partitions"
    )
    parser.add_argument("--batch-events", type=int, help="events per request")
    parser.add_argument("--timeout", type=float, help="seconds per request")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--progress-interval", type=float, default=10.0)
    parser.add_argument(
        "--consumer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka consumer setting (security, fetch sizes); repeatable",
    )
    parser.add_argument(
        "--no-group-pause",
        action="store_true",
        help="do not share 429 pauses with the group through <topic>.meterline-pause",
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO, not WARNING")
    parser.set_defaults(handler=_relay)


def _relay(args: argparse.Namespace) -> int:
    from meterline._errors import ConfigError, MeterlineError

    # meterline's warnings (events held, rejected, a broker that does not answer) on stderr
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)

    try:
        from meterline.relay import Relay, RelayStats
    except ImportError:
        print(
            "meterline relay needs confluent-kafka: pip install 'meterline[kafka]'", file=sys.stderr
        )
        return 2
    settings: dict[str, Any] = {}
    for number, item in enumerate(args.consumer_config, 1):
        name, sep, value = item.partition("=")
        if not sep or not _SETTING.fullmatch(name.strip()):
            # Nothing of the item is shown: a mistyped one may hold its secret anywhere.
            print(
                f"meterline relay: --consumer-config number {number} is not KEY=VALUE "
                "(a librdkafka setting name: letters, digits, dots, dashes, underscores)",
                file=sys.stderr,
            )
            return 2
        settings[name.strip()] = value
    options: dict[str, Any] = {"shutdown_timeout": args.shutdown_timeout}
    if args.timeout is not None:
        options["timeout"] = args.timeout

    def progress(stats: RelayStats) -> None:
        lag = "?" if stats.lag is None else stats.lag
        held = f" holding={stats.holding}" if stats.holding else ""
        error = f" last_error={stats.last_error!r}" if stats.holding and stats.last_error else ""
        print(
            f"relay {args.group}: delivered={stats.delivered} rejected={stats.rejected} "
            f"committed={stats.committed} lag={lag} partitions={list(stats.partitions)}"
            f"{held}{error}",
            file=sys.stderr,
            flush=True,
        )

    try:
        relay = Relay(
            args.source,
            group=args.group,
            destination=args.to,
            api_key=args.api_key,
            base_url=args.base_url,
            journal_dir=args.journal_dir,
            consumer_config=settings,
            max_rate=args.max_rate,
            batch_events=args.batch_events,
            progress_interval=args.progress_interval,
            on_progress=progress,
            group_pause=not args.no_group_pause,
            **options,
        )
    except ConfigError as exc:
        print(f"meterline relay: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        relay.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"meterline relay: {relay!r} running", file=sys.stderr, flush=True)
    try:
        final = relay.run()
    except ConfigError as exc:
        print(f"meterline relay: {exc}", file=sys.stderr)
        return 2
    except MeterlineError as exc:  # the journal directory cannot be used, say
        print(f"meterline relay: {exc}", file=sys.stderr)
        return 2
    progress(final)
    print("meterline relay: stopped", file=sys.stderr, flush=True)
    return 0
