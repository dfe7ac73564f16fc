"""The systemd units shipped with resurgo (package data here) and install-units, which puts
them in place: resurgo-save.service (one save, driven by /etc/resurgo/resurgo.toml),
resurgo-save.timer (nightly) and resurgo-failure@.service (an OnFailure= example)."""
