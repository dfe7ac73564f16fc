"""The check a recovered system runs at its first boot in a rehearsal: a POSIX sh script
(the recovered system may have no Python) and the systemd unit that starts it.

Once the boot has settled (`systemctl is-system-running --wait`: running or degraded, or
maintenance when the boot failed into emergency mode) the script writes one
protocol line (rehearse.protocol) per property to the serial console, then a result line,
marks itself done (it runs once) and powers the system off (poweroff.target):

    boot        the default target reached: the system is running or degraded
    units       no unit failed that was not failed when the set was saved
    mounts      every fstab entry but swap and noauto ones is mounted
    swap        every fstab swap entry (not noauto) is active
    canary      the canary save wrote is there with the digest it had
    hostname    the kernel's host name is the saved one
    machine-id  /etc/machine-id is the saved one
    network     every interface the network configuration names exists

What it compares with is in a file of KEY=VALUE lines written by the rescue
(rehearse.installcheck), read line by line and never run as code:

    hostname=web1
    machine_id=4c1d...
    canary_path=/var/lib/resurgo/canary
    canary_sha256=9f86...
    failed_units=known|unknown
    failed_unit=smartmontools.service     (one line each)
    interface=ens3                        (one line each)

The script is FUNCTIONS (the checks, each reading its files below a root given as an
argument: "" when it runs) followed by MAIN; the unit tests run FUNCTIONS on the host
against a tree of their own.
"""

from __future__ import annotations

# In the recovered system.
CHECK_DIR = "/var/lib/resurgo/rehearse"
SCRIPT_PATH = f"{CHECK_DIR}/check.sh"
EXPECTED_PATH = f"{CHECK_DIR}/expected"
DONE_PATH = f"{CHECK_DIR}/done"
UNIT_NAME = "resurgo-rehearse-check.service"
# The targets whose .wants the unit is linked into (and the system's default target).
WANTED_BY = ("multi-user.target", "emergency.target")
# How long the boot may take to settle before the check says it did not.
SETTLE_SECONDS = 600
# The longest detail a line carries (the host takes 1024 characters).
DETAIL_MAX = 300

FUNCTIONS = r"""
MARK='RESURGO-REHEARSE'

# A JSON string of $1: printable ASCII kept (anything else becomes ?), cut short, quotes
# and backslashes escaped.
json_string() {
    printf '"%s"' "$(printf '%s' "$1" | LC_ALL=C tr -c ' -~' '[?*]' | cut -c1-@DETAIL_MAX@ \
        | sed 's/[\\"]/\\&/g')"
}

# A line to the serial console (the kernel's console may be another one, or none),
# else to the console; and to standard output (the journal) in any case.
emit() {
    { printf '%s\n' "$1" >/dev/ttyS0; } 2>/dev/null \
        || { printf '%s\n' "$1" >/dev/console; } 2>/dev/null || :
    printf '%s\n' "$1"
}

check_line() {  # NAME true|false DETAIL
    cl_name=$(json_string "$1")
    cl_detail=$(json_string "$3")
    emit "$MARK {\"kind\": \"check\", \"name\": $cl_name, \"ok\": $2, \"detail\": $cl_detail}"
}

result_line() {  # true|false
    emit "$MARK {\"kind\": \"result\", \"ok\": $1}"
}

# The value of the first KEY= line of file $2 (empty when there is none).
expected() {
    ex_value=
    while IFS= read -r ex_line; do
        case $ex_line in
            "$1="*) ex_value=${ex_line#*=}; break ;;
        esac
    done < "$2"
    printf '%s' "$ex_value"
}

# Whether file $3 holds the line KEY=VALUE ($1=$2).
expected_has() {
    while IFS= read -r eh_line; do
        [ "$eh_line" = "$1=$2" ] && return 0
    done < "$3"
    return 1
}

# Each check_* sets OK (true or false) and DETAIL; ROOT is "" on the recovered system.

check_boot() {
    if command -v timeout >/dev/null 2>&1; then
        cb_state=$(timeout @SETTLE@ systemctl is-system-running --wait 2>/dev/null)
    else
        cb_state=$(systemctl is-system-running --wait 2>/dev/null)
    fi
    case $cb_state in
        running|degraded) OK=true; DETAIL=$cb_state ;;
        '') OK=false; DETAIL='systemctl is-system-running said nothing' ;;
        *) OK=false; DETAIL=$cb_state ;;
    esac
}

check_units() {  # EXPECTED
    cu_now=$(systemctl list-units --state=failed --plain --no-legend --no-pager 2>/dev/null)
    cu_new=
    cu_old=
    while read -r cu_first cu_second cu_rest; do
        case $cu_first in
            *.*) cu_name=$cu_first ;;
            *) cu_name=$cu_second ;;  # the bullet some versions print before a failed unit
        esac
        [ -n "$cu_name" ] || continue
        if expected_has failed_unit "$cu_name" "$1"; then
            cu_old="$cu_old $cu_name"
        else
            cu_new="$cu_new $cu_name"
        fi
    done <<EOF
$cu_now
EOF
    cu_known=$(expected failed_units "$1")
    if [ -n "$cu_new" ]; then
        OK=false
        if [ "$cu_known" = known ]; then
            DETAIL="failed anew:$cu_new"
        else
            DETAIL="failed:$cu_new (the units failed at save time are not known)"
        fi
    elif [ -n "$cu_old" ]; then
        OK=true; DETAIL="none failed anew; failed as at save time:$cu_old"
    else
        OK=true; DETAIL='none failed'
    fi
}

# Whether mountpoint $1 is mounted (file $2: /proc/self/mounts).
is_mounted() {
    while read -r im_dev im_point im_rest; do
        [ "$im_point" = "$1" ] && return 0
    done < "$2"
    return 1
}

check_mounts() {  # ROOT
    if [ ! -f "$1/etc/fstab" ]; then
        OK=true; DETAIL='no /etc/fstab'; return
    fi
    cm_missing=
    cm_count=0
    while read -r cm_spec cm_point cm_type cm_opts cm_rest; do
        case $cm_spec in ''|'#'*) continue ;; esac
        [ "$cm_type" = swap ] && continue
        case ",$cm_opts," in *,noauto,*) continue ;; esac
        case $cm_point in /*) ;; *) continue ;; esac
        [ "$cm_point" = / ] || cm_point=${cm_point%/}
        cm_count=$((cm_count + 1))
        is_mounted "$cm_point" "$1/proc/self/mounts" || cm_missing="$cm_missing $cm_point"
    done < "$1/etc/fstab"
    if [ -n "$cm_missing" ]; then
        OK=false; DETAIL="not mounted:$cm_missing"
    else
        OK=true; DETAIL="$cm_count fstab entries mounted"
    fi
}

# The device /proc/swaps names for fstab's $1 (below root $2).
swap_device() {
    case $1 in
        UUID=*) sd_link=/dev/disk/by-uuid/${1#UUID=} ;;
        LABEL=*) sd_link=/dev/disk/by-label/${1#LABEL=} ;;
        PARTUUID=*) sd_link=/dev/disk/by-partuuid/${1#PARTUUID=} ;;
        PARTLABEL=*) sd_link=/dev/disk/by-partlabel/${1#PARTLABEL=} ;;
        *) sd_link=$1 ;;
    esac
    sd_real=$(readlink -f "$2$sd_link" 2>/dev/null) || sd_real=
    [ -n "$sd_real" ] || sd_real=$2$sd_link
    printf '%s' "${sd_real#"$2"}"
}

check_swap() {  # ROOT
    cs_missing=
    cs_count=0
    if [ -f "$1/etc/fstab" ]; then
        while read -r cs_spec cs_point cs_type cs_opts cs_rest; do
            case $cs_spec in ''|'#'*) continue ;; esac
            [ "$cs_type" = swap ] || continue
            case ",$cs_opts," in *,noauto,*) continue ;; esac
            cs_count=$((cs_count + 1))
            cs_dev=$(swap_device "$cs_spec" "$1")
            is_mounted_swap "$cs_dev" "$1/proc/swaps" || cs_missing="$cs_missing $cs_spec"
        done < "$1/etc/fstab"
    fi
    if [ -n "$cs_missing" ]; then
        OK=false; DETAIL="not active:$cs_missing"
    elif [ "$cs_count" -eq 0 ]; then
        OK=true; DETAIL='no swap in fstab'
    else
        OK=true; DETAIL="$cs_count active"
    fi
}

is_mounted_swap() {  # DEVICE /proc/swaps
    [ -f "$2" ] || return 1
    while read -r ims_name ims_rest; do
        [ "$ims_name" = "$1" ] && return 0
    done < "$2"
    return 1
}

check_canary() {  # ROOT EXPECTED
    cc_path=$(expected canary_path "$2")
    cc_sum=$(expected canary_sha256 "$2")
    if [ -z "$cc_path" ]; then
        OK=true; DETAIL='none was saved with the set'
    elif [ -h "$1$cc_path" ]; then
        OK=false; DETAIL="$cc_path is a symbolic link"
    elif [ ! -f "$1$cc_path" ]; then
        OK=false; DETAIL="$cc_path is missing"
    else
        cc_now=$(sha256sum < "$1$cc_path" 2>/dev/null) || cc_now=
        cc_now=${cc_now%% *}
        if [ "$cc_now" = "$cc_sum" ]; then
            OK=true; DETAIL="$cc_path as saved"
        else
            OK=false; DETAIL="$cc_path differs from the saved one"
        fi
    fi
}

# The first line of file $1 (empty when it cannot be read).
first_line() {
    fl_line=
    [ -r "$1" ] && IFS= read -r fl_line < "$1"
    printf '%s' "$fl_line"
}

check_hostname() {  # ROOT EXPECTED
    ch_saved=$(expected hostname "$2")
    ch_now=$(first_line "$1/proc/sys/kernel/hostname")
    if [ -z "$ch_saved" ]; then
        OK=true; DETAIL="$ch_now (none was saved)"
    elif [ "$ch_now" = "$ch_saved" ]; then
        OK=true; DETAIL=$ch_now
    else
        OK=false; DETAIL="$ch_now, saved $ch_saved"
    fi
}

check_machine_id() {  # ROOT EXPECTED
    cmi_saved=$(expected machine_id "$2")
    cmi_now=$(first_line "$1/etc/machine-id")
    if [ -z "$cmi_saved" ]; then
        OK=true; DETAIL="$cmi_now (none was saved)"
    elif [ "$cmi_now" = "$cmi_saved" ]; then
        OK=true; DETAIL=$cmi_now
    else
        OK=false; DETAIL="$cmi_now, saved $cmi_saved"
    fi
}

check_network() {  # ROOT EXPECTED
    cn_found=
    cn_missing=
    while IFS= read -r cn_line; do
        case $cn_line in interface=*) ;; *) continue ;; esac
        cn_name=${cn_line#interface=}
        if [ -e "$1/sys/class/net/$cn_name" ]; then
            cn_found="$cn_found $cn_name"
        else
            cn_missing="$cn_missing $cn_name"
        fi
    done < "$2"
    if [ -n "$cn_missing" ]; then
        OK=false; DETAIL="missing:$cn_missing"
    elif [ -n "$cn_found" ]; then
        OK=true; DETAIL="present:$cn_found"
    else
        OK=true; DETAIL='the network configuration names no interface'
    fi
}

say_check() {  # NAME, after a check_* set OK and DETAIL
    check_line "$1" "$OK" "$DETAIL"
    [ "$OK" = true ] || ALL_OK=false
}

# Every check of the system below ROOT against EXPECTED, a line each; ALL_OK says.
run_checks() {  # ROOT EXPECTED
    ALL_OK=true
    check_boot; say_check boot
    check_units "$2"; say_check units
    check_mounts "$1"; say_check mounts
    check_swap "$1"; say_check swap
    check_canary "$1" "$2"; say_check canary
    check_hostname "$1" "$2"; say_check hostname
    check_machine_id "$1" "$2"; say_check machine-id
    check_network "$1" "$2"; say_check network
}
""".replace("@DETAIL_MAX@", str(DETAIL_MAX)).replace("@SETTLE@", str(SETTLE_SECONDS))

MAIN = f"""
run_checks "" {EXPECTED_PATH}
result_line "$ALL_OK"
: > {DONE_PATH}
sync
# poweroff.target started as `systemctl poweroff` does, without asking logind first
# (a minimal system has no D-Bus: that fails, noisily, before it falls back).
systemctl --no-block --job-mode=replace-irreversibly start poweroff.target
"""


def script() -> str:
    return ("#!/bin/sh\n"
            "# resurgo rehearsal: the recovered system checks itself once, then powers off.\n"
            "# Written by the rescue (resurgo.rehearse=1); see resurgo's rehearse package.\n"
            + FUNCTIONS + MAIN)


def unit() -> str:
    return f"""[Unit]
Description=resurgo rehearsal: check the recovered system, then power off
# Wanted by emergency.target too: a boot that fails (a mount that does not come) still
# reports, in emergency mode, what failed. So no default dependencies (they would pull in
# sysinit.target, which failed then); in a normal boot it starts once multi-user.target
# is reached.
DefaultDependencies=no
ConditionPathExists=!{DONE_PATH}
RequiresMountsFor={CHECK_DIR}
After=multi-user.target emergency.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
# simple, not oneshot: the boot is settled only once every start job is done, this one's
# included, and the script waits for the boot to settle.
Type=simple
ExecStart=/bin/sh {SCRIPT_PATH}

[Install]
WantedBy={" ".join(WANTED_BY)}
"""


__all__ = ["CHECK_DIR", "DONE_PATH", "EXPECTED_PATH", "FUNCTIONS", "MAIN", "SCRIPT_PATH",
           "UNIT_NAME", "WANTED_BY", "script", "unit"]
