"""The status as metrics for Prometheus, in the text format node_exporter's textfile
collector reads (--collector.textfile.directory): a HELP and a TYPE line per metric, then
its samples, each labelled with the host and the medium.

The file is replaced atomically (a hidden file in the same directory, renamed over it):
the collector, which reads every *.prom file of its directory at each scrape, never sees
half of one. It is made readable by all (0644): node_exporter does not run as root, and
the metrics hold no secret.

    resurgo_status_ok                       1 when status exits 0
    resurgo_status_exit_code                its exit code
    resurgo_set_current                     1 when the layout is the one the set describes
    resurgo_last_set_timestamp_seconds      when the newest set was saved (0: no set)
    resurgo_last_set_size_bytes             its size on the medium
    resurgo_last_set_files                  the files it holds
    resurgo_last_set_incremental            1 for an incremental set
    resurgo_last_set_chain_length           the sets it builds on
    resurgo_last_set_chain_whole            1 when every one of them is on the medium
    resurgo_last_set_rescue_image           1 when it holds its rescue image
    resurgo_layout_differences              the differences found (stale when > 0)
    resurgo_last_check_timestamp_seconds    when the last check ended
    resurgo_last_check_success              1 when it found every set good
    resurgo_last_rehearsal_timestamp_seconds, resurgo_last_rehearsal_success  likewise
    resurgo_status_timestamp_seconds        when this status was taken

The check and rehearsal metrics are left out when there is no such result: absent, not
zero, as the Prometheus guidelines ask for what is not known. A status that could not
be taken at all (the medium unreachable, say) still replaces the file: status_ok 0, its
exit code and its time, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from resurgo import private
from resurgo.errors import BadInput, OperationFailed
from resurgo.media import SetKind
from resurgo.recovery import results
from resurgo.recovery.status import StatusReport

PREFIX = "resurgo_"
MODE = 0o644


def escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed
    escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_OK = "1 when resurgo status found the newest set good (exit code 0)."
_EXIT = "The exit code of resurgo status (0 good, 1 not good, others: it could not tell)."
_WHEN = "When resurgo status ran, in seconds since the epoch."


def metrics(status: StatusReport) -> str:
    """The status in the text exposition format, ending in a line feed."""
    return _render(status.host, status.medium, _samples(status))


def failure_metrics(host: str, medium: str, at: datetime, code: int) -> str:
    """What a status that could not be taken (the medium unreachable, the layout not
    described) leaves for the collector: not good, and why in its exit code; without it
    the file of the last run would still say good."""
    return _render(host, medium, iter([("status_ok", _OK, 0), ("status_exit_code", _EXIT, code),
                                       ("status_timestamp_seconds", _WHEN,
                                        round(at.timestamp(), 3))]))


def _render(host: str, medium: str, samples: Iterator[tuple[str, str, float]]) -> str:
    labels = f'{{host="{escape(host)}",medium="{escape(medium)}"}}'
    lines: list[str] = []
    for name, help_text, value in samples:
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge",
                  f"{PREFIX}{name}{labels} {_number(value)}"]
    return "\n".join(lines) + "\n"


def _samples(status: StatusReport) -> Iterator[tuple[str, str, float]]:
    s = status.set
    yield "status_ok", _OK, int(status.ok)
    yield "status_exit_code", _EXIT, int(status.exit_code)
    yield ("set_current", "1 when the newest set describes the disks, volumes and "
           "filesystems the system has now.", int(s is not None and status.current))
    yield ("last_set_timestamp_seconds", "When the newest recovery set of the host was "
           "saved, in seconds since the epoch (0 when there is none).",
           s.created.timestamp() if s else 0)
    yield ("last_set_size_bytes", "The size of the newest recovery set on the medium.",
           s.size if s else 0)
    yield ("last_set_files", "The number of files of the newest recovery set.",
           s.file_count if s else 0)
    yield ("last_set_incremental", "1 when the newest recovery set is incremental.",
           int(s is not None and s.kind is SetKind.INCREMENTAL))
    yield ("last_set_chain_length", "The number of sets the newest set builds on.",
           len(status.chain))
    yield ("last_set_chain_whole", "1 when every set the newest set builds on is on the "
           "medium.", int(s is not None and status.broken_chain is None))
    yield ("last_set_rescue_image", "1 when the newest recovery set holds its rescue "
           "image.", int(s is not None and status.rescue_image))
    yield ("layout_differences", "The differences between the live layout and the newest "
           "set's (the set is stale when there is any).", len(status.differences or ()))
    for verb, name in ((results.Verb.CHECK, "check"), (results.Verb.REHEARSE, "rehearsal")):
        result = status.last_check if verb is results.Verb.CHECK else status.last_rehearsal
        if result is None:
            continue
        yield (f"last_{name}_timestamp_seconds", f"When the last resurgo {verb} ended, in "
               "seconds since the epoch.", result.time.timestamp())
        yield (f"last_{name}_success", f"1 when the last resurgo {verb} found every set "
               "good.", int(result.ok))
    yield "status_timestamp_seconds", _WHEN, round(status.at.timestamp(), 3)


def write_metrics(status: StatusReport | str, path: Path) -> None:
    """Replace the file at path with the status's metrics (see the module docstring), or
    with the text given (failure_metrics)."""
    text = status if isinstance(status, str) else metrics(status)
    if not path.parent.is_dir():
        raise BadInput(f"--prometheus {path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise BadInput(f"--prometheus {path} is a directory",
                       f"name a file in it, e.g. {path / 'resurgo.prom'}")
    try:
        private.replace_bytes(path, text.encode(), mode=MODE)
    except OSError as e:
        raise OperationFailed(f"cannot write the metrics to {path}: {e.strerror}") from None


__all__ = ["failure_metrics", "metrics", "write_metrics"]
