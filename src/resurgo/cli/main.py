"""resurgo's argparse front end: parse, dispatch, turn user errors into messages and exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from resurgo import __version__
from resurgo.cli import describe, plan, recover, rescue, save, sets, show, validate, verify
from resurgo.errors import ExitCode, ResurgoError

log = logging.getLogger("resurgo")

Handler = Callable[[argparse.Namespace], int]

# The product's verbs; those without a module answer "not implemented yet".
PLANNED = {
    "rehearse": "prove a recovery set restores and boots, in a virtual machine",
}


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"resurgo: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.BAD_INPUT)


def common_options() -> ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print data as JSON"
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log every external command and show tracebacks",
    )
    return common


def build_parser() -> ArgumentParser:
    common = common_options()
    parser = ArgumentParser(
        prog="resurgo",
        description="Automated system recovery for Linux.",
        parents=[common],
        epilog="exit codes: 0 success, 1 the operation failed, 2 bad input or usage, "
        "3 a recovery precondition does not hold, 4 a recovery set is not authentic "
        "(unsigned or not signed by a trusted key, or changed since it was signed)",
    )
    parser.add_argument("--version", action="version", version=f"resurgo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    describe.add_parser(sub, common)
    show.add_parser(sub, common)
    validate.add_parser(sub, common)
    plan.add_parser(sub, common)
    recover.add_parser(sub, common)
    rescue.add_parser(sub, common)
    save.add_parser(sub, common)
    sets.add_parser(sub, common)
    verify.add_parser(sub, common)
    for verb, help_text in PLANNED.items():
        p = sub.add_parser(
            verb, parents=[common], help=f"{help_text} (not implemented yet)", description=help_text
        )
        p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(handler=_not_implemented)
    return parser


def _not_implemented(args: argparse.Namespace) -> int:
    print(f"resurgo: {args.command} is not implemented yet", file=sys.stderr)
    return ExitCode.FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    args.debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(message)s" if args.debug else "resurgo: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except ResurgoError as e:
        if args.debug:
            log.exception("failed")
        print(f"resurgo: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("resurgo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `resurgo show | head`); nothing to report.
        sys.stderr.close()
        return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
