"""The keys of the configuration file: each one's type, bounds, default and the
command-line option it stands for.

The names are an interface (scripts and configuration management write them), so they
change only by adding. docs/config.md documents each one, and a test checks that it
names them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from resurgo.errors import BadInput

# What a key holds once read: TOML's string, integer, boolean or array of strings.
Value = str | int | bool | tuple[str, ...]


class Kind(Enum):
    STRING = "string"
    # An absolute path: a relative one would depend on where the command was started
    # (systemd starts it in /).
    PATH = "path"
    INT = "integer"
    BOOL = "boolean"
    STRINGS = "array of strings"
    # An integer number of seconds, or a string such as "26h" (s, m, h, d, w).
    DURATION = "duration"


# Values are shown in messages and passed to programs: a string is one line of printable
# characters, and not longer than this.
MAX_STRING = 4096
# An array of excludes or recipients longer than this is not a configuration.
MAX_ITEMS = 10_000
MAX_COUNT = 1_000_000

DURATION = re.compile(r"^(?:[0-9]{1,9}[smhdw])+$")
_AGE = re.compile(r"^age1[0-9a-z]{20,}$")
_SSH_KEY = re.compile(r"^(?:ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,3}(?: .*)?$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DEV = re.compile(r"^\S+$")


@dataclass(frozen=True)
class Key:
    # Dotted for a key of a table: "s3.endpoint".
    name: str
    kind: Kind
    # What it does, as docs/config.md and `config show` say it.
    help: str
    # The command-line option it corresponds to, and which commands take it.
    option: str
    # The value when the file does not set it (None: not set, the command decides).
    default: Value | None = None
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    # A further check of a string (of each string of an array): why it is wrong, or None.
    check: Callable[[str], str | None] | None = None


def _medium(value: str) -> str | None:
    from resurgo.media.url import parse_url

    if value.endswith(".toml"):
        return ("a description file is not a medium (give it on the command line: "
                "plan --from FILE)")
    try:
        parse_url(value)
    except BadInput as e:
        return e.message
    return None


def _recipient(value: str) -> str | None:
    if _AGE.match(value) or _SSH_KEY.match(value):
        return None
    return "not an age recipient (age1...) or an SSH public key (ssh-ed25519 ..., ssh-rsa ...)"


def _endpoint(value: str) -> str | None:
    if re.match(r"^https?://[^\s/?#]+/?$", value):
        return None
    return "not an endpoint URL such as https://s3.example.net or http://127.0.0.1:8333"


def _region(value: str) -> str | None:
    return None if _REGION.match(value) else "not a region name such as eu-west-1"


def _device(value: str) -> str | None:
    return None if _DEV.match(value) else "not a disk (/dev/sdb, sdb, /dev/disk/by-id/...)"


def _kernel_arg(value: str) -> str | None:
    from resurgo.rescue.cmdline import grub_quote

    try:
        grub_quote(value)
    except ValueError as e:
        return str(e)
    return None


def _command(value: str) -> str | None:
    import shlex

    try:
        return None if shlex.split(value) else "an empty command"
    except ValueError as e:
        return f"not a command line: {e}"


def _word(value: str) -> str | None:
    return None if re.match(r"^[A-Za-z0-9_.+-]+$", value) else "not a name"


TABLES = ("s3", "ssh", "nfs", "cifs", "hooks", "rescue", "rehearse")

KEYS: tuple[Key, ...] = (
    Key("medium", Kind.STRING,
        "where the recovery sets live: a directory, sftp://user@host/path, s3://bucket/prefix "
        "or floppy:/path/image.img; save writes there, and every command that reads sets "
        "reads there (rescue: the place the unattended recovery looks first)",
        "save --to, list MEDIUM, --from of plan, recover, verify and the commands that read "
        "sets; rescue --from-url", check=_medium),
    Key("root", Kind.PATH,
        "the system saved and described: the running one (/), or one mounted elsewhere, "
        "such as a snapshot", "save, describe and status --root", default="/"),
    Key("exclude", Kind.STRINGS,
        "paths of the saved system left out of the set, with all below them (absolute)",
        "save --exclude", default=(), check=lambda v: None if v.startswith("/")
        else "not an absolute path of the saved system"),
    Key("exclude_disks", Kind.STRINGS,
        "disks left out of the description and the set, e.g. the disk the sets are written to",
        "save, describe and status --exclude-disk", default=(), check=_device),
    Key("encrypt_to", Kind.STRINGS,
        "age recipients (age1... or SSH public keys) the archives are encrypted to",
        "save --encrypt-to", default=(), check=_recipient),
    Key("sign_key", Kind.PATH,
        "the SSH ed25519 key that signs each set (a .pub file for a key in ssh-agent)",
        "save --sign-key"),
    Key("trust", Kind.PATH,
        "an OpenSSH allowed-signers file: sets not signed by one of its keys are refused "
        "(default: /etc/resurgo/allowed_signers when it exists)",
        "--trust of every command that reads or writes a medium, and of rescue"),
    Key("identity", Kind.PATH,
        "the age identity (secret key) of encrypted sets, for the commands that read them",
        "--identity of plan, recover, verify, rehearse and the commands that read "
        "archives"),
    Key("compression_level", Kind.INT,
        "zstd level of the archives: 1 (fastest) to 19 (smallest)",
        "save --compression-level", default=2, low=1, high=19),
    Key("snapshot", Kind.STRING,
        "read each btrfs tree from a read-only snapshot and each filesystem on an LVM "
        "volume from an LVM snapshot: auto (where one can be taken), required (exit 3 "
        "when a filesystem cannot be), off", "save --snapshot",
        default="auto", choices=("auto", "required", "off")),
    Key("snapshot_size", Kind.INT,
        "a classic LVM snapshot's room for changes, in percent of its volume (refused "
        "when the volume group has less free)", "save --snapshot-size",
        default=10, low=1, high=100),
    Key("packages", Kind.STRING,
        "pool: leave unchanged package files out of the archives, their packages kept in "
        "the medium's package pool (a recovery needs it); off: every file archived",
        "save --packages", default="off", choices=("pool", "off")),
    Key("initramfs", Kind.STRING,
        "rebuild: leave the initramfs images out of the set, the recovery makes them anew "
        "in the restored system; keep: archive them", "save --initramfs",
        default="keep", choices=("keep", "rebuild")),
    Key("catalog", Kind.BOOL,
        "write the catalog of unchanged package files (false: --no-catalog)",
        "save and describe --no-catalog", default=True),
    Key("keep_last", Kind.INT, "retention: keep the newest N sets", "--keep-last",
        low=1, high=MAX_COUNT),
    Key("keep_daily", Kind.INT, "retention: keep the newest set of each of the last N days",
        "--keep-daily", low=1, high=MAX_COUNT),
    Key("keep_weekly", Kind.INT,
        "retention: keep the newest set of each of the last N weeks", "--keep-weekly",
        low=1, high=MAX_COUNT),
    Key("keep_monthly", Kind.INT,
        "retention: keep the newest set of each of the last N months", "--keep-monthly",
        low=1, high=MAX_COUNT),
    Key("report_dir", Kind.PATH,
        "where each save, recover, verify, check, prune, restore and rehearse keeps its "
        "JSON report",
        "--report-dir", default="/var/log/resurgo"),
    Key("max_age", Kind.DURATION,
        "the age beyond which status calls the newest set too old: seconds, or a number "
        "with s, m, h, d or w (\"26h\")", "status --max-age"),
    Key("s3.endpoint", Kind.STRING,
        "the S3 server (default: AWS, or AWS_ENDPOINT_URL)", "--s3-endpoint",
        check=_endpoint),
    Key("s3.region", Kind.STRING, "the S3 region (default: us-east-1)", "--s3-region",
        check=_region),
    Key("s3.insecure_http", Kind.BOOL,
        "allow a plain http:// endpoint (the sets cross the network in the clear)",
        "--s3-insecure-http", default=False),
    Key("ssh.key", Kind.PATH, "the private key for an sftp:// medium", "--ssh-key"),
    Key("ssh.known_hosts", Kind.PATH,
        "the known_hosts file for an sftp:// medium: the server's key must be in it, and no "
        "other file is used (rescue: the keys the image accepts)",
        "--ssh-known-hosts"),
    Key("ssh.strict_host_keys", Kind.BOOL,
        "accept only host keys already known, also for a save", "--ssh-strict-host-keys",
        default=False),
    Key("nfs.version", Kind.STRING,
        "the NFS version of an nfs:// medium (3 for a server without NFSv4)", "--nfs-version",
        default="4.2", choices=("3", "4", "4.0", "4.1", "4.2")),
    Key("nfs.mount_port", Kind.INT,
        "NFSv3: the port of the server's MOUNT service (default: asked from its rpcbind)",
        "--nfs-mount-port", low=1, high=65535),
    Key("cifs.credentials", Kind.PATH,
        "the credentials file of a cifs:// medium (username=, password=, domain= lines; "
        "readable by its owner alone)", "--cifs-credentials"),
    Key("hooks.pre-save", Kind.STRING,
        "a command run just before the archives are read (to quiesce applications), "
        "split into words as a shell would and run without one; its failure fails the "
        "save", "save --pre-save", check=_command),
    Key("hooks.post-save", Kind.STRING,
        "a command run just after the archives are read, whatever happened (failure, "
        "Ctrl-C); its failure is a warning", "save --post-save", check=_command),
    Key("rescue.build", Kind.BOOL,
        "build the rescue image into each set (false: --no-rescue)", "save --no-rescue",
        default=True),
    Key("rescue.require", Kind.BOOL,
        "a set without its rescue image is an error, not a warning", "save --require-rescue",
        default=False),
    Key("rescue.unattended", Kind.BOOL,
        "make the unattended recovery the default boot entry (it erases the target disks "
        "once the menu times out)", "rescue --unattended", default=False),
    Key("rescue.after", Kind.STRING,
        "what the unattended recovery does when done", "rescue --after",
        default="poweroff", choices=("poweroff", "reboot", "shell")),
    Key("rescue.kernel_args", Kind.STRINGS,
        "added to every boot entry's kernel command line (e.g. \"ip=dhcp\")",
        "rescue --kernel-arg", default=(), check=_kernel_arg),
    Key("rescue.menu_timeout", Kind.INT,
        "seconds the boot menu waits (-1: until a key is pressed)", "rescue --menu-timeout",
        default=5, low=-1, high=86400),
    Key("rescue.modules", Kind.STRINGS, "kernel modules the image also carries",
        "rescue --add-module", default=(), check=_word),
    Key("rescue.programs", Kind.STRINGS, "programs the image also carries, with their "
        "libraries", "rescue --add-program", default=(), check=_word),
    Key("rescue.secure_boot", Kind.STRING,
        "the UEFI path through the distribution's signed shim and GRUB: when they are "
        "there (auto), or a build without them fails (required)", "rescue --secure-boot",
        default="auto", choices=("auto", "required", "off")),
    Key("rescue.compression_level", Kind.INT,
        "zstd level of the image's initramfs (default 9)", "rescue --compression-level",
        low=1, high=19),
    Key("rehearse.work_dir", Kind.PATH,
        "where rehearse makes its disk images (in a directory of each run's own)",
        "rehearse --work-dir", default="/var/tmp/resurgo-rehearse"),
    Key("rehearse.disk_bus", Kind.STRING, "the bus of the rehearsal's disks",
        "rehearse --disk-bus", default="virtio", choices=("virtio", "nvme", "sata", "scsi")),
    Key("rehearse.firmware", Kind.STRING,
        "the rehearsal's firmware (auto: the one the set was saved on)",
        "rehearse --firmware", default="auto", choices=("auto", "bios", "uefi")),
    Key("rehearse.memory", Kind.INT, "the rehearsal's memory, in MiB", "rehearse --memory",
        default=2048, low=256, high=1 << 20),
    Key("rehearse.cpus", Kind.INT, "the rehearsal's virtual CPUs", "rehearse --cpus",
        low=1, high=64),
)

BY_NAME = {k.name: k for k in KEYS}
