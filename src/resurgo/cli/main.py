"""resurgo's argparse front end: parse, dispatch, turn user errors into messages and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from resurgo import __version__
from resurgo import config as configuration
from resurgo.cli import (
    check,
    config,
    configured,
    describe,
    doctor,
    install_units,
    ls,
    plan,
    prune,
    recover,
    rehearse,
    reports,
    rescue,
    restore,
    save,
    sets,
    show,
    status,
    validate,
    verify,
)
from resurgo.cli.output import drop
from resurgo.errors import INTERRUPTED, OUTPUT_CLOSED, STOPPED, ExitCode, ResurgoError

log = logging.getLogger("resurgo")

Handler = Callable[[argparse.Namespace], int]

# The product's verbs; those without a module answer "not implemented yet".
PLANNED: dict[str, str] = {}


class ParserExit(Exception):
    """The parser is done before any command ran (--help, --version, a usage error): the
    exit code main returns. Not SystemExit, so that main(argv) returns in-process too."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise ParserExit(status)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"resurgo: error: {message}", file=sys.stderr)
        raise ParserExit(ExitCode.BAD_INPUT)


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
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"the configuration file (default: ${configuration.ENV_CONFIG}, else "
        f"{configuration.DEFAULT_PATH} when it exists); command-line options override it",
    )
    return common


def build_parser() -> ArgumentParser:
    common = common_options()
    parser = ArgumentParser(
        prog="resurgo",
        description="Automated system recovery for Linux.",
        parents=[common],
        epilog="exit codes: " + ", ".join(f"{c.value} {c.meaning}" for c in ExitCode)
        + "; stopped from outside: "
        + ", ".join(f"{code} {meaning}" for code, meaning in STOPPED.items()),
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
    prune.add_parser(sub, common)
    verify.add_parser(sub, common)
    ls.add_parser(sub, common)
    restore.add_parser(sub, common)
    status.add_parser(sub, common)
    check.add_parser(sub, common)
    config.add_parser(sub, common)
    install_units.add_parser(sub, common)
    doctor.add_parser(sub, common)
    rehearse.add_parser(sub, common)
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
    """Run one command; its exit code. Leaves the process as it found it (the logging
    set up for the call is undone), so that it can run again in the same process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        try:
            settings = _configuration(argv)
        except ResurgoError as e:
            _say(f"resurgo: error: {e}")
            return e.exit_code
        applied = configured.apply(parser, settings)
        args = parser.parse_args(argv)
        missing = applied.missing_medium(args.command, args)
        if missing is not None:
            dict(configured.commands(parser))[args.command].error(missing)
    except ParserExit as e:
        return e.code
    args.configuration = settings
    # --json and --debug may come before or after the command (they are in both parsers).
    args.json = getattr(args, "json", False)
    args.debug = getattr(args, "debug", False)
    with _logging(args.debug):
        run = reports.begin(args, argv)
        code: int | None = None
        error: str | None = "stopped by an internal error (a bug in resurgo)"
        try:
            code, error = _run(args)
        finally:
            # However the command ended, the commands that declare it leave a report.
            reports.finish(run, code, error)
        return code


def _configuration(argv: list[str]) -> configuration.Config:
    """The configuration file of this run (--config, else the default), checked; an
    empty one for --help and --version, and for `config check`, which reports the
    problems itself, when it is not valid."""
    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    given: str | None = pre.parse_known_args(argv)[0].config
    try:
        return configuration.load(given)
    except ResurgoError:
        # The command's words: neither options nor --config's value.
        words = [a for i, a in enumerate(argv)
                 if not a.startswith("-") and (i == 0 or argv[i - 1] != "--config")]
        if {"-h", "--help", "--version"} & set(argv) or words[:2] == ["config", "check"]:
            return configuration.Config()
        raise


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    """Log messages to the standard error of the moment: every one with --debug (each
    external command among them), else warnings and errors, prefixed."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(message)s" if debug else "resurgo: %(levelname)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


CLOSED = "stopped: the reader of its output went away"


def _run(args: argparse.Namespace) -> tuple[int, str | None]:
    """The command's exit code, and the error that stopped it (None when none did)."""
    handler: Handler = args.handler
    try:
        code = handler(args)
    except ResurgoError as e:
        if args.debug:
            log.exception("failed")
        _say(f"resurgo: error: {e}")
        return e.exit_code, str(e)
    except KeyboardInterrupt:
        _say("resurgo: interrupted")
        return INTERRUPTED, "interrupted"
    except BrokenPipeError:
        # The reader went away (`resurgo status | head -1`): the command stops there, as
        # a program killed by SIGPIPE would, with nothing on standard error (the reader
        # chose to stop reading) and an exit code that is no success: what it found
        # (stale, damaged) was not all read.
        _drop_output()
        return OUTPUT_CLOSED, CLOSED
    try:
        # Here, not at exit, where a reader that went away would cost exit code 120.
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_output()
        return OUTPUT_CLOSED, CLOSED
    return code, None


def _drop_output() -> None:
    """Send what is left for a reader that went away to /dev/null (output.drop)."""
    drop(sys.stdout)


def _say(message: str) -> None:
    """A last message on standard error, unless its reader went away too (`2>&1 | head`):
    the exit code still tells."""
    try:
        print(message, file=sys.stderr)
    except BrokenPipeError:
        drop(sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
