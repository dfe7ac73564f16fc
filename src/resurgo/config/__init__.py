"""The configuration file, /etc/resurgo/resurgo.toml: what an administrator sets once
(the medium, keys, excludes, retention, rescue options) for every command to use.

`keys` defines each key; `loader` reads a file and checks it whole. Command-line options
override it: resurgo.cli.configured applies it to the parser.
"""

from resurgo.config.keys import BY_NAME, KEYS, TABLES, Key, Kind, Value
from resurgo.config.loader import (
    DEFAULT_PATH,
    ENV_CONFIG,
    Checked,
    Config,
    InvalidConfig,
    check_bytes,
    chosen_path,
    load,
    read_bytes,
)

__all__ = [
    "BY_NAME",
    "DEFAULT_PATH",
    "ENV_CONFIG",
    "KEYS",
    "TABLES",
    "Checked",
    "Config",
    "InvalidConfig",
    "Key",
    "Kind",
    "Value",
    "check_bytes",
    "chosen_path",
    "load",
    "read_bytes",
]
