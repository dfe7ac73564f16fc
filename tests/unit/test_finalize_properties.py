"""finalize's text transforms change only the lines they report, on any input."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from resurgo.finalize import cmdline, netconf, storageconf
from resurgo.finalize.identity import Identities
from resurgo.finalize.lines import body, split_lines
from resurgo.finalize.model import Rewrite
from resurgo.finalize.netconf import NetMap
from tests.support.builders import vda_to_nvme

IDS: Identities = vda_to_nvme()[0]
NETMAP = NetMap({"eth0": "ens3", "ens4": "ens5"}, {"52:54:00:12:34:56": "52:54:00:9a:bc:de"})

# Lines that name things the transforms know, mixed into arbitrary text.
KNOWN = [
    "/dev/vda3\t/\text4\tdefaults\t0\t1",
    "/dev/vda4 none swap sw 0 0",
    "  cryptswap /dev/vda4 /dev/urandom swap",
    "ARRAY /dev/md0 devices=/dev/vda1,/dev/vda2",
    'GRUB_CMDLINE_LINUX="root=/dev/vda3 resume=/dev/vda4"',
    "RESUME=/dev/vda4",
    "\tlinux /vmlinuz root=/dev/loop0p3 ro",
    "options root=/dev/vda3",
    "iface eth0 inet dhcp",
    "interface-name=eth0",
    "bridge_ports eth0 ens4",
    "[Match]",
    "MACAddress=52:54:00:12:34:56",
    "      macaddress: 52:54:00:12:34:56  # eth0",
    "# /dev/vda3 eth0 52:54:00:12:34:56",
]
TEXT_LINES = st.lists(
    st.one_of(
        st.sampled_from(KNOWN),
        # Any character but line ends, form feeds and Unicode separators included.
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
            max_size=60,
        ),
    ),
    max_size=25,
)
ENDINGS = st.sampled_from(["\n", "\r\n", ""])

TRANSFORMS: list[Callable[[str], Rewrite]] = [
    lambda t: storageconf.rewrite_fstab(t, IDS),
    lambda t: storageconf.rewrite_crypttab(t, IDS),
    lambda t: storageconf.rewrite_mdadm_conf(t, IDS),
    lambda t: storageconf.rewrite_resume_conf(t, IDS),
    lambda t: cmdline.rewrite_grub_default(t, IDS),
    lambda t: cmdline.rewrite_kernel_cmdline(t, IDS),
    lambda t: cmdline.rewrite_loader_entry(t, IDS),
    lambda t: cmdline.fix_grub_cfg(t, IDS, "UUID=x"),
    lambda t: netconf.rewrite_ifupdown(t, NETMAP),
    lambda t: netconf.rewrite_nm_keyfile(t, NETMAP),
    lambda t: netconf.rewrite_networkd(t, NETMAP),
    lambda t: netconf.rewrite_netplan(t, NETMAP),
]


@settings(max_examples=150, deadline=None)
@given(TEXT_LINES, ENDINGS, st.sampled_from(range(len(TRANSFORMS))))
def test_unreported_lines_and_all_line_ends_stay_byte_identical(
    lines: list[str], end: str, which: int
) -> None:
    text = "\n".join(lines) + (end if lines else "")
    rw = TRANSFORMS[which](text)
    before = split_lines(text)
    after = split_lines(rw.text)
    assert len(after) == len(before)
    changed = {c.line for c in rw.changes}
    for n, (old, new) in enumerate(zip(before, after, strict=True), start=1):
        if n in changed:
            change = next(c for c in rw.changes if c.line == n)
            assert body(old)[0] == change.before and body(new)[0] == change.after
            assert old[len(change.before or "") :] == new[len(change.after or "") :]
            assert change.why
        else:
            assert old == new
    # Idempotent: what was rewritten needs nothing more.
    assert not TRANSFORMS[which](rw.text).changed


@settings(max_examples=100, deadline=None)
@given(TEXT_LINES)
def test_persistent_net_rules_only_lose_reported_lines(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    rw = netconf.rewrite_persistent_net_rules(text, frozenset({"52:54:00:12:34:56"}))
    removed = {c.line for c in rw.changes}
    kept = [ln for n, ln in enumerate(split_lines(text), 1) if n not in removed]
    assert rw.text == "".join(kept)
