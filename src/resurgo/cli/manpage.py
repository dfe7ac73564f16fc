"""resurgo(8), and the bash and zsh completions, generated from the argument parser.

    python -m resurgo.cli.manpage [--check] [DIR]

writes (or with --check, compares) DIR/share/man/man8/resurgo.8,
DIR/share/bash-completion/completions/resurgo and DIR/share/zsh/site-functions/_resurgo
(DIR: the source tree). The files are generated here and committed, and setup.py installs
them as data files: generating them while the package is built would need resurgo's own
dependencies inside the build's isolated environment, which has setuptools alone. A unit
test regenerates them and fails when they are not in step with the parser; after changing
a command's options, run this module and commit what it wrote.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from resurgo import __version__, reports
from resurgo import config as configuration
from resurgo.cli import completion
from resurgo.cli.parserinfo import CommandLine, Option, read
from resurgo.errors import MEANINGS, STOPPED, ExitCode

MAN_PAGE = Path("share/man/man8/resurgo.8")
BASH = Path("share/bash-completion/completions/resurgo")
ZSH = Path("share/zsh/site-functions/_resurgo")

GENERATED = completion.HEADER

# What the man page says beyond the parser: the flow, the files, the environment.
FLOW = (
    "resurgo describes a Linux machine (disks, partition tables, md, LUKS, LVM, filesystems, "
    "btrfs subvolumes, bootloader, drivers) well enough to rebuild it on blank and "
    "different hardware, saves that description with backup archives of every filesystem "
    "and a bootable rescue image as a recovery set on a medium, and from the rescue image "
    "recreates the machine: plan maps the saved disks to the actual ones without writing "
    "anything, recover recreates the layout, restores every file with its metadata and "
    "makes the system bootable, verify compares every restored entry with the set."
)
MEDIA = [
    ("/mnt/usb/resurgo, file:///mnt/usb/resurgo", "a directory (a USB disk, an NFS mount)"),
    ("sftp://user@host:22/srv/sets", "an SFTP server through OpenSSH, key authentication "
     "(--ssh-key, --ssh-known-hosts, --ssh-strict-host-keys)"),
    ("s3://bucket/prefix", "an S3 bucket, AWS or any S3-compatible server (--s3-endpoint, "
     "--s3-region)"),
    ("nfs://server[:port]/export/dir", "a directory on an NFS server, mounted by resurgo "
     "itself, privately, read-only unless the command writes sets (--nfs-version, "
     "--nfs-mount-port)"),
    ("cifs://[user@]server[:port]/share/dir", "a directory of an SMB/CIFS share, mounted "
     "likewise; the password from a credentials file only root may read "
     "(--cifs-credentials)"),
    ("floppy:/path/image.img", "a 1.44 MB FAT image holding the description alone"),
]
FILES = [
    (str(configuration.DEFAULT_PATH), "the configuration file (see docs/config.md and "
     "resurgo config show); command-line options override it"),
    ("/etc/resurgo/allowed_signers", "the trusted signers of recovery sets when --trust is "
     "not given (an OpenSSH allowed-signers file)"),
    (f"{reports.LOG_DIR}/COMMAND-TIME.json", "the JSON report of each save, recover, "
     "verify, check, prune and restore run (--report-dir elsewhere), the newest "
     f"{reports.KEEP} of each command kept; a recovered system keeps its recovery's report "
     "and the rescue's log there"),
]
ENVIRONMENT = [
    (configuration.ENV_CONFIG, f"the configuration file, instead of {configuration.DEFAULT_PATH}"),
    ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY", "the credentials of an s3:// medium (else "
     "~/.aws)"),
    ("AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL", "the S3 server when --s3-endpoint is not given"),
]

_OPTION_WORD = re.compile(r"(?<![\w/\\])(--?[A-Za-z0-9][\w-]*)")


def _roff(text: str) -> str:
    """Text for a roff line: backslashes escaped, option names with real minus signs (a
    hyphen would not paste into a shell), and no line taken for a request."""
    text = text.replace("\\", "\\e")
    text = _OPTION_WORD.sub(lambda m: m.group(1).replace("-", "\\-"), text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _synopsis(text: str) -> str:
    """A synopsis with the options bold and their values italic."""
    out = []
    for word in text.split(" "):
        core = word.strip("[]().|")
        if core.startswith("-"):
            out.append(word.replace(core, f"\\fB{_roff(core)}\\fR"))
        elif core and core.upper() == core and core[0].isalpha():
            out.append(word.replace(core, f"\\fI{_roff(core)}\\fR"))
        else:
            out.append(_roff(word))
    return " ".join(out)


def _option_item(o: Option) -> list[str]:
    flags = ", ".join(f"\\fB{_roff(f)}\\fR" for f in o.flags)
    value = f" \\fI{_roff(o.metavar)}\\fR" if o.metavar else ""
    more = " (repeatable)" if o.repeat and "repeat" not in o.help else ""
    return [".TP", flags + value, _roff(o.help + more)]


def man_page(cli: CommandLine) -> str:
    lines = [
        "'\\\" t",
        f".\\\" {GENERATED}",
        f'.TH RESURGO 8 "" "resurgo {__version__}" "System Administration"',
        # No hyphenation, no justification: option names and URLs stay whole and unspaced.
        ".nh",
        ".ad l",
        ".SH NAME",
        "resurgo \\- " + _roff(cli.description[:1].lower() + cli.description[1:].rstrip(".")),
        ".SH SYNOPSIS",
        ".B resurgo",
        " ".join(_synopsis(f"[{o.flags[0]}" + (f" {o.metavar}]" if o.metavar else "]"))
                 for o in cli.common if "--help" not in o.flags)
        + " \\fICOMMAND\\fR [\\fIoptions\\fR]",
        ".br",
        ".B resurgo \\-\\-version",
        ".SH DESCRIPTION",
        _roff(FLOW),
        ".PP",
        _roff("Every command that prints data takes --json; --debug logs every external "
              "command and shows tracebacks. The commands:"),
    ]
    for c in cli.commands:
        lines += [".TP", f"\\fB{c.name}\\fR", _roff(c.summary)]
    lines += [".SH COMMON OPTIONS"]
    for o in (*cli.common, *cli.top):
        lines += _option_item(o)
    lines += [".SH COMMANDS"]
    for c in cli.commands:
        lines += [f'.SS "{c.name}"', ".PP", "\\fBresurgo\\fR " + _synopsis(c.synopsis)]
        if c.description:
            lines += [".PP", _roff(c.description)]
        for p in c.positionals:
            lines += [".TP", f"\\fI{_roff(p.metavar)}\\fR", _roff(p.help)]
        for g in c.groups:
            if g.title != "options" or g.description:
                lines += [".PP", f"\\fI{_roff(g.title)}\\fR"
                          + (": " + _roff(g.description) if g.description else "")]
            for o in g.options:
                lines += _option_item(o)
    lines += [".SH MEDIA", _roff("MEDIUM, for every command that takes one, is one of:")]
    for form, what in MEDIA:
        lines += [".TP", f"\\fI{_roff(form)}\\fR", _roff(what)]
    lines += [".SH EXIT STATUS", ".TS", "tab(\t);", "lb lb", "n lx.", "code\tmeaning"]
    for code in ExitCode:
        lines.append(f"{code.value}\tT{{\n{_roff(MEANINGS[code])}\nT}}")
    for value, meaning in STOPPED.items():
        lines.append(f"{value}\tT{{\n{_roff(meaning)}\nT}}")
    lines += [".TE", ".SH FILES"]
    for path, what in FILES:
        lines += [".TP", f"\\fI{_roff(path)}\\fR", _roff(what)]
    lines += [".SH ENVIRONMENT"]
    for names, what in ENVIRONMENT:
        lines += [".TP", f"\\fB{_roff(names)}\\fR", _roff(what)]
    lines += [".SH SEE ALSO",
              _roff("The README and docs/ (format.md, security.md, config.md) of resurgo's "
                    "source tree."),
              ""]
    return "\n".join(lines)


def outputs(parser: argparse.ArgumentParser | None = None) -> dict[Path, str]:
    """Each generated file (relative to the source tree) and its text."""
    if parser is None:
        from resurgo.cli.main import build_parser

        parser = build_parser()
    cli = read(parser)
    return {MAN_PAGE: man_page(cli), BASH: completion.bash(cli), ZSH: completion.zsh(cli)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resurgo.cli.manpage",
                                 description="write resurgo(8) and the completions")
    ap.add_argument("--check", action="store_true",
                    help="write nothing: exit 1 when a file differs from what it would be")
    ap.add_argument("tree", nargs="?", type=Path,
                    default=Path(__file__).resolve().parents[3],
                    help="the source tree (default: the one this module is in)")
    args = ap.parse_args(argv)
    if not (args.tree / "setup.py").is_file():
        # An installed resurgo is not in a source tree: never write into site-packages' parents.
        ap.error(f"{args.tree} is not resurgo's source tree (no setup.py): give the tree")
    stale: list[Path] = []
    for rel, text in outputs().items():
        path = args.tree / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"not in step with the parser: {', '.join(map(str, stale))}; run python -m "
              "resurgo.cli.manpage", file=sys.stderr)
        return 1
    for rel in stale:
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
