"""Which files of the restored system finalize rewrites, and with which transform.

Pure given a Tree: the storage files by the Identities, the network files by the NetMap
and the MACs that are gone. Every result is a (path, Rewrite) for a file that exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from resurgo.finalize import cmdline, netconf, storageconf
from resurgo.finalize.identity import Identities
from resurgo.finalize.model import Rewrite
from resurgo.finalize.netconf import NetMap, NicRef
from resurgo.finalize.tree import Tree

StorageTransform = Callable[[str, Identities], Rewrite]

STORAGE_FILES: tuple[tuple[str, StorageTransform], ...] = (
    ("/etc/fstab", storageconf.rewrite_fstab),
    ("/etc/crypttab", storageconf.rewrite_crypttab),
    ("/etc/mdadm/mdadm.conf", storageconf.rewrite_mdadm_conf),
    ("/etc/mdadm.conf", storageconf.rewrite_mdadm_conf),
    ("/etc/default/grub", cmdline.rewrite_grub_default),
    ("/etc/default/grub.d/*.cfg", cmdline.rewrite_grub_default),
    ("/etc/initramfs-tools/initramfs.conf", storageconf.rewrite_resume_conf),
    ("/etc/initramfs-tools/conf.d/*", storageconf.rewrite_resume_conf),
    ("/etc/kernel/cmdline", cmdline.rewrite_kernel_cmdline),
)


def _expand(tree: Tree, pattern: str) -> list[str]:
    if any(c in pattern for c in "*?["):
        return tree.glob(pattern)
    return [pattern] if tree.read(pattern) is not None else []


def storage_rewrites(
    tree: Tree, ids: Identities, *, esp: str | None = None
) -> list[tuple[str, Rewrite]]:
    """The storage files that name a device whose identity changed, rewritten."""
    todo: list[tuple[str, StorageTransform]] = list(STORAGE_FILES)
    if esp is not None:
        todo.append((f"{esp.rstrip('/')}/loader/entries/*.conf", cmdline.rewrite_loader_entry))
    out = []
    seen: set[str] = set()
    for pattern, transform in todo:
        for path in _expand(tree, pattern):
            if path in seen:
                continue
            seen.add(path)
            text = tree.read(path)
            if text is None:
                continue
            out.append((path, transform(text, ids)))
    return out


def grub_cfg_rewrite(
    tree: Tree, path: str, ids: Identities, root_spec: str | None
) -> tuple[str, Rewrite] | None:
    text = tree.read(path)
    if text is None:
        return None
    return path, cmdline.fix_grub_cfg(text, ids, root_spec)


@dataclass(frozen=True)
class NetFormat:
    patterns: tuple[str, ...]
    refs: Callable[[str, str], list[NicRef]]
    rewrite: Callable[[str, NetMap], Rewrite]


NET_FORMATS: tuple[NetFormat, ...] = (
    NetFormat(
        ("/etc/network/interfaces", "/etc/network/interfaces.d/*"),
        netconf.refs_ifupdown,
        netconf.rewrite_ifupdown,
    ),
    NetFormat(
        ("/etc/NetworkManager/system-connections/*",),
        netconf.refs_nm_keyfile,
        netconf.rewrite_nm_keyfile,
    ),
    NetFormat(
        ("/etc/systemd/network/*.network", "/etc/systemd/network/*.link"),
        netconf.refs_networkd,
        netconf.rewrite_networkd,
    ),
    NetFormat(
        ("/etc/netplan/*.yaml", "/etc/netplan/*.yml"), netconf.refs_netplan, netconf.rewrite_netplan
    ),
)
PERSISTENT_NET_RULES = "/etc/udev/rules.d/70-persistent-net.rules"


def network_files(tree: Tree) -> list[tuple[str, str, NetFormat | None]]:
    """(path, text, format) of every network configuration file present; format None is
    the udev rules file."""
    out: list[tuple[str, str, NetFormat | None]] = []
    for fmt in NET_FORMATS:
        for pattern in fmt.patterns:
            for path in _expand(tree, pattern):
                text = tree.read(path)
                if text is not None:
                    out.append((path, text, fmt))
    text = tree.read(PERSISTENT_NET_RULES)
    if text is not None:
        out.append((PERSISTENT_NET_RULES, text, None))
    return out


def network_refs(files: list[tuple[str, str, NetFormat | None]]) -> list[NicRef]:
    out: list[NicRef] = []
    for path, text, fmt in files:
        out += fmt.refs(text, path) if fmt else netconf.refs_persistent_net_rules(text, path)
    return out


def network_rewrites(
    files: list[tuple[str, str, NetFormat | None]], nm: NetMap, gone: frozenset[str]
) -> list[tuple[str, Rewrite]]:
    out = []
    for path, text, fmt in files:
        if fmt is None:
            out.append((path, netconf.rewrite_persistent_net_rules(text, gone)))
        else:
            out.append((path, fmt.rewrite(text, nm)))
    return out
