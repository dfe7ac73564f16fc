"""Where things are in the rescue system, and the small files resurgo writes into it.

Shared by the builder (which writes them) and the agent (which reads them inside the
rescue), so that both name the same paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from resurgo.rescue.contents import PRELOAD_MODULES

#: resurgo, tomli_w and blake3 (on PYTHONPATH in the rescue).
SITE_DIR: Final = "/usr/lib/resurgo/python"
#: What the builder tells the agent (JSON): build id, embedded location, description digest.
CONFIG_PATH: Final = Path("/etc/resurgo/rescue.json")
#: The description of the set the image belongs to, and its digest file.
DESCRIPTION_PATH: Final = Path("/resurgo/description.toml")
LOG_PATH: Final = Path("/run/resurgo/rescue.log")
#: The host keys of the SFTP server the image's set lives on (checked strictly).
KNOWN_HOSTS_PATH: Final = Path("/etc/resurgo/known_hosts")
#: The boot medium (the ISO filesystem), mounted read-only while the rescue runs.
MEDIUM_MOUNT: Final = Path("/run/resurgo/medium")
#: Filesystems searched for recovery sets are mounted below this.
SCAN_DIR: Final = Path("/run/resurgo/disks")
#: The filesystem resurgo.keys names (the LUKS key files), mounted read-only.
KEYS_MOUNT: Final = Path("/run/resurgo/keys")
HOSTNAME: Final = "resurgo-rescue"

__all__ = [
    "CONFIG_PATH",
    "DESCRIPTION_PATH",
    "HOSTNAME",
    "KEYS_MOUNT",
    "KNOWN_HOSTS_PATH",
    "LOG_PATH",
    "MEDIUM_MOUNT",
    "PRELOAD_MODULES",
    "SCAN_DIR",
    "SITE_DIR",
    "init_script",
]

_INIT: Final = r"""#!/bin/sh
# PID 1 of the resurgo rescue system (written by resurgo.rescue; the initramfs is the
# whole system: there is no root filesystem to switch to). Mounts the kernel's
# filesystems, hands over to the agent (drivers, then the unattended recovery when the
# kernel command line asks for it), then keeps a shell on every console.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=linux LANG=C.UTF-8 PYTHONPATH=@SITE_DIR@
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /root
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
if [ -d /sys/firmware/efi ]; then
    modprobe -q efivarfs
    mount -t efivarfs -o nosuid,nodev,noexec efivarfs /sys/firmware/efi/efivars 2>/dev/null
fi
echo @HOSTNAME@ >/proc/sys/kernel/hostname
# Driver chatter would bury the agent's lines: warnings and worse only, on the consoles.
echo 4 >/proc/sys/kernel/printk
mkdir -p /run/resurgo
@PYTHON@ -P -m resurgo.rescue.agent boot 2>/run/resurgo/agent.err
echo $? >/run/resurgo/agent.rc
consoles=$(cat /sys/class/tty/console/active 2>/dev/null)
if [ -s /run/resurgo/agent.err ]; then
    for c in $consoles; do cat /run/resurgo/agent.err >"/dev/$c"; done
fi

shell_on() {
    while :; do
        setsid -c /bin/sh -l <>"/dev/$1" >&0 2>&1
        sleep 1
    done
}
for c in $consoles; do
    case "$c" in tty0) c=tty1 ;; esac
    shell_on "$c" &
done
# PID 1 never ends; waiting here also reaps the orphans the shells leave behind.
while :; do
    wait
    sleep 5
done
"""

PROFILE: Final = r"""# resurgo rescue system
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=${TERM:-linux} LANG=C.UTF-8 PYTHONPATH=@SITE_DIR@
PS1='resurgo-rescue:\w# '
cd /root 2>/dev/null
cat /etc/motd
"""

MOTD: Final = """
resurgo rescue system. resurgo is ready: `resurgo --help`.
  The description of the recovery set this image belongs to: /resurgo/description.toml
  The unattended run's log: /run/resurgo/rescue.log
  Recover:  resurgo plan --from FILE    then    resurgo recover --from FILE
  poweroff, reboot: as usual.

"""

LVM_CONF: Final = """# resurgo rescue: there is no udevd here; lvm makes its device nodes itself.
devices {
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
}
activation {
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}
"""

PASSWD: Final = "root:x:0:0:root:/root:/bin/sh\n"
GROUP: Final = "root:x:0:\ntty:x:5:\ndisk:x:6:\n"
NSSWITCH: Final = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
HOSTS: Final = f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost\n"


def os_release(version: str) -> str:
    return (
        'NAME="resurgo rescue"\nID=resurgo-rescue\n'
        f'VERSION_ID="{version}"\nPRETTY_NAME="resurgo {version} rescue system"\n'
    )


def init_script(python: str) -> str:
    return (
        _INIT.replace("@SITE_DIR@", SITE_DIR)
        .replace("@HOSTNAME@", HOSTNAME)
        .replace("@PYTHON@", python)
    )


def profile() -> str:
    return PROFILE.replace("@SITE_DIR@", SITE_DIR)


def wrapper(python: str, module: str) -> str:
    """A command that runs a Python module with resurgo on the path, and nothing from the
    working directory (-P: an administrator's cwd may hold a planted resurgo/)."""
    return f'#!/bin/sh\nPYTHONPATH={SITE_DIR} exec {python} -P -m {module} "$@"\n'
