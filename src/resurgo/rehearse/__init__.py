"""`resurgo rehearse`: a recovery set restored by its own rescue image onto blank virtual
disks, the recovered system booted and checked from inside, the time of each phase
measured.

The guest side (the rescue in rehearsal mode, the check the recovered system runs) and the
host side (qemu, the disk images, the report) speak through lines on the serial console:
``protocol``.

The guest side
--------------

What save records (``savefacts``, in the set's description, format 1.2, signed with the
set): ``[rehearsal] canary`` (a file of 64 random bytes in hex, /var/lib/resurgo/canary,
0600, written into the running system just before the archives; absent for a --root save
or when the set leaves that place out: the save report's "canary:" says why) and
``failed_units`` (the units failed at save time; absent when not known). Host name and
machine-id are the description's ``[system]``.

The rescue, booted with ``resurgo.recover=auto resurgo.rehearse=1 resurgo.after=poweroff``
(rescue.cmdline; rehearse=1 without recover=auto is refused), writes on every console,
each line standing alone (never behind the agent's "resurgo-rescue:" prefix), in order:

    RESURGO-REHEARSE {"kind": "step", "step": "rescue", "event": "end", "ok": true}
        the agent started (the rescue system booted); the first line
    RESURGO-REHEARSE {"kind": "step", "step": "set", "event": "start"}
    RESURGO-REHEARSE {"kind": "step", "step": "set", "event": "end", "ok": true}
        finding and choosing the set, fetching its description through its checked
        index, `resurgo validate` (and the key files); ok false: no recover runs
    then recover's own steps, as recover runs them (`resurgo recover --step-lines
    /proc/self/fd/1`: its output, which the agent copies to the consoles):
    RESURGO-REHEARSE {"kind": "step", "step": "verify-set", "event": "start"}  (with
        resurgo.args=--verify-set only), then "layout", "restore", "check", "finalize",
        each a start and an end with ok; a step that raises ends without an end line
    RESURGO-REHEARSE {"kind": "step", "step": "install-check", "event": "start"}
    RESURGO-REHEARSE {"kind": "step", "step": "install-check", "event": "end", "ok": true}
        only when recover succeeded: the check installed into the recovered system
        (installcheck; ok false with a "detail" when it cannot be)
    RESURGO-REHEARSE {"kind": "recovered", "ok": true, "exit": 0, "check": true}
        always the last line: ok and exit are recover's (or 1 when no set was chosen, 2
        for a kernel command line that does not parse: then it is the only line after
        the first), check whether the check is installed (present when ok)

then it keeps its log in the recovered system and powers off (resurgo.after).

The recovered system, at its first boot (checkscript: a systemd service enabled for
multi-user.target, emergency.target and the default target, a POSIX sh script, a file of
expected values; it runs once), waits for the boot to settle (`systemctl
is-system-running --wait`, at most 600 s; a boot that fell into emergency mode, a mount
that never came, say, reports too: boot "maintenance" and the mount named), then writes
to /dev/ttyS0 (else /dev/console), in this order:

    RESURGO-REHEARSE {"kind": "check", "name": "boot", "ok": true, "detail": "running"}
    ... one line each for "units", "mounts", "swap", "canary", "hostname",
    "machine-id", "network" (detail: what failed, e.g. "not mounted: /srv",
    "failed anew: foo.service", "missing: eth0"; printable ASCII, 300 characters at most)
    RESURGO-REHEARSE {"kind": "result", "ok": true}
        ok: every check ok

and powers off (`systemctl poweroff`). A canary, host name or machine-id the set does
not hold passes with a detail saying so; units failed at save time that are failed
again pass; when those units are not known, any failed unit fails.
"""
