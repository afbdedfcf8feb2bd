"""The ``meterline`` command (public module).

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its options and
sets ``handler`` to ``_cmd_<name>(args) -> int``, which does the work and returns the exit
code. ``main()`` parses and dispatches; the logic itself lives in the library (the server in
``meterline.server``), so this module stays a thin layer of options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from meterline._cli_backfill import add_backfill
from meterline._cli_journal import add_journal
from meterline._cli_relay import add_relay
from meterline._cli_usage import add_usage
from meterline._version import __version__
from meterline.server import DEFAULT_GRACE_PERIOD, DEFAULT_MAX_BODY_BYTES, parse_duration


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``meterline`` parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="meterline", description="Report billable usage; tools for meterline users."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    _add_serve(subparsers)
    add_journal(subparsers)
    add_backfill(subparsers.choices["journal"])
    add_usage(subparsers)
    add_relay(subparsers)
    return parser


# -- meterline serve ---------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the local Orb-compatible reference ingest server",
        description=(
            "Run a local ingest server that applies Orb's rules to POST /v1/ingest and keeps "
            "events in SQLite; GET /v1/usage?start=&end= reports what it counted. Prints "
            "'meterline reference server listening on URL' when ready; stops on SIGINT/SIGTERM."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=8787, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        default="meterline-usage.db",
        help="SQLite file, or :memory: (default: %(default)s in the current directory)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="accept this bearer token (repeatable); without any, every token is accepted",
    )
    parser.add_argument(
        "--grace-period",
        type=_duration,
        default=DEFAULT_GRACE_PERIOD,
        metavar="DURATION",
        help="refuse events older than this: seconds or 30m, 12h, 7d (default: 12h)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help="answer 413 above this request size, after gzip (default: %(default)s)",
    )
    parser.add_argument(
        "--plans",
        metavar="FILE",
        help="entitlements for GET /v1/entitlements/CUSTOMER/FEATURE (TOML, or .json)",
    )
    parser.add_argument(
        "--metrics",
        metavar="FILE",
        help="billable metrics GET /v1/usage reports ([[metric]] tables in TOML, or .json)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from meterline.server import serve

    return serve(
        host=args.host,
        port=args.port,
        db=args.db,
        api_keys=args.api_keys,
        grace_period=args.grace_period,
        max_body_bytes=args.max_body_bytes,
        verbose=args.verbose,
        metrics=args.metrics,
        plans=args.plans,
    )


# -- argument types ----------------------------------------------------------------------------


def _port(text: str) -> int:
    port = _int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
