"""Matching saved disks to actual disks: identity, size, bus, order, --map, --target, refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resurgo.errors import BadInput
from resurgo.model import RemovableDevice
from resurgo.plan import make_plan
from resurgo.plan.model import Check, MatchBy, Plan, PlanOptions
from tests.support.builders import actual, description, disk, ext4, part, standard
from tests.support.consts import GIB, MIB

OPTS = PlanOptions(which=lambda p: f"/usr/sbin/{p}")


def plan_for(desc, disks, **opts) -> Plan:  # type: ignore[no-untyped-def]
    return make_plan(desc, disks, replace(OPTS, **opts))


def matched(plan: Plan) -> dict[str, tuple[str, MatchBy]]:
    return {m.saved: (m.path, m.by) for m in plan.matches}


def checks(plan: Plan) -> list[Check]:
    return [f.check for f in plan.failures]


def two_disks(size_a: int = 20 * GIB, size_b: int = 100 * GIB, **kw):  # type: ignore[no-untyped-def]
    a = disk("sda", size_a, **kw.get("a", {}))
    b = disk("sdb", size_b, **kw.get("b", {}))
    pa = part(a, 1, MIB, size_a - 2 * MIB)
    pb = part(b, 1, MIB, size_b - 2 * MIB)
    return description(
        disks=[a, b],
        partitions=[pa, pb],
        filesystems=[ext4(pa.id, "/", GIB), ext4(pb.id, "/srv", GIB)],
    )


def test_wwn_wins_over_size_and_order() -> None:
    desc = standard(wwn="naa.5000c500aaaa0001")
    disks = [actual("sda", 20 * GIB), actual("sdb", 40 * GIB, wwn="0x5000C500AAAA0001")]
    plan = plan_for(desc, disks)
    assert matched(plan) == {"disk.sda": ("/dev/sdb", MatchBy.WWN)}
    assert plan.ok


def test_serial_match() -> None:
    desc = standard(serial="S3Z9NB0K123456")
    disks = [actual("vda", 20 * GIB), actual("vdb", 20 * GIB, serial="S3Z9NB0K123456 ")]
    assert matched(plan_for(desc, disks)) == {"disk.sda": ("/dev/vdb", MatchBy.SERIAL)}


def test_ambiguous_match_is_an_error_listing_the_candidates() -> None:
    desc = standard()
    plan = plan_for(desc, [actual("vdb", 30 * GIB), actual("vdc", 30 * GIB)])
    assert checks(plan) == [Check.AMBIGUOUS_MATCH]
    msg = plan.failures[0].message
    assert "/dev/vdb" in msg and "/dev/vdc" in msg and "disk.sda" in msg
    assert "--map disk.sda=" in (plan.failures[0].hint or "")
    assert plan.actions == ()


def test_larger_disks_of_different_sizes_are_still_ambiguous() -> None:
    # Which disk to leave untouched is never decided by size alone.
    plan = plan_for(standard(), [actual("vdb", 30 * GIB), actual("vdc", 1000 * GIB)])
    assert checks(plan) == [Check.AMBIGUOUS_MATCH]


def test_exact_size_decides() -> None:
    plan = plan_for(standard(), [actual("vdb", 30 * GIB), actual("vdc", 20 * GIB)])
    assert matched(plan) == {"disk.sda": ("/dev/vdc", MatchBy.SIZE)}


def test_a_disk_too_small_is_not_chosen_over_one_that_fits() -> None:
    plan = plan_for(standard(used_root=5 * GIB), [actual("vdb", 4 * GIB), actual("vdc", 25 * GIB)])
    assert matched(plan) == {"disk.sda": ("/dev/vdc", MatchBy.SIZE)}
    assert plan.ok


def test_two_alike_disks_pair_in_order() -> None:
    desc = two_disks(50 * GIB, 50 * GIB)
    plan = plan_for(desc, [actual("vdc", 60 * GIB), actual("vdb", 60 * GIB)])
    assert matched(plan) == {
        "disk.sda": ("/dev/vdb", MatchBy.ORDER),
        "disk.sdb": ("/dev/vdc", MatchBy.ORDER),
    }


def test_sizes_pair_disks_so_that_none_must_shrink() -> None:
    desc = two_disks(20 * GIB, 100 * GIB)
    # By name order the small saved disk would go to the big one; by size it must not.
    plan = plan_for(desc, [actual("vdb", 200 * GIB), actual("vdc", 30 * GIB)])
    assert matched(plan) == {
        "disk.sda": ("/dev/vdc", MatchBy.SIZE),
        "disk.sdb": ("/dev/vdb", MatchBy.SIZE),
    }
    assert plan.ok


def test_bus_decides_between_disks_of_one_size() -> None:
    desc = standard(transport="nvme")
    disks = [
        actual("sda", 30 * GIB, transport="sata"),
        actual("nvme0n1", 30 * GIB, transport="nvme"),
    ]
    assert matched(plan_for(desc, disks)) == {"disk.sda": ("/dev/nvme0n1", MatchBy.SIZE)}


def test_map_overrides_by_id_and_by_path() -> None:
    desc = two_disks(50 * GIB, 50 * GIB)
    disks = [actual("vdb", 60 * GIB), actual("vdc", 60 * GIB)]
    plan = plan_for(desc, disks, maps=(("disk.sda", "/dev/vdc"), ("/dev/sdb", "vdb")))
    assert matched(plan) == {
        "disk.sda": ("/dev/vdc", MatchBy.MAP),
        "disk.sdb": ("/dev/vdb", MatchBy.MAP),
    }
    partial = plan_for(desc, disks, maps=(("sda", "vdc"),))
    assert matched(partial) == {
        "disk.sda": ("/dev/vdc", MatchBy.MAP),
        "disk.sdb": ("/dev/vdb", MatchBy.SIZE),
    }


def test_map_naming_an_unknown_saved_disk_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"no disk 'disk\.sdz'") as e:
        plan_for(standard(), [actual("vdb")], maps=(("disk.sdz", "vdb"),))
    assert "disk.sda" in (e.value.hint or "")


def test_map_to_a_missing_disk_is_a_precondition() -> None:
    plan = plan_for(standard(), [actual("vdb")], maps=(("disk.sda", "/dev/vdz"),))
    assert checks(plan) == [Check.TARGET_MISSING]


def test_map_of_two_saved_disks_to_one_actual_is_bad_input() -> None:
    with pytest.raises(BadInput):
        plan_for(
            two_disks(), [actual("vdb", 200 * GIB)], maps=(("disk.sda", "vdb"), ("disk.sdb", "vdb"))
        )


def test_target_restricts_the_candidates() -> None:
    disks = [actual("vdb", 30 * GIB), actual("vdc", 30 * GIB)]
    plan = plan_for(standard(), disks, targets=("/dev/vdc",))
    assert matched(plan) == {"disk.sda": ("/dev/vdc", MatchBy.SIZE)}
    assert plan.ok
    for a in plan.actions:
        assert set(a.writes) <= {"/dev/vdc"}


def test_missing_target_is_a_precondition() -> None:
    plan = plan_for(standard(), [actual("vdb")], targets=("/dev/vdb", "/dev/sdq"))
    assert checks(plan) == [Check.TARGET_MISSING]
    assert "/dev/sdq" in plan.failures[0].message


def test_removable_at_save_time_is_never_a_candidate() -> None:
    stick = RemovableDevice("removable.sdc", "/dev/sdc", 16 * GIB, "usb", serial="USB123")
    desc = replace(standard(), removable_devices=(stick,))
    disks = [actual("sdc", 20 * GIB, serial="USB123"), actual("vdb", 30 * GIB)]
    plan = plan_for(desc, disks)
    assert matched(plan) == {"disk.sda": ("/dev/vdb", MatchBy.SIZE)}
    assert any("/dev/sdc" in n and "removable" in n for n in plan.notes)
    named = plan_for(desc, disks, targets=("/dev/sdc",))
    assert Check.TARGET_FORBIDDEN in checks(named)
    mapped = plan_for(desc, disks, maps=(("disk.sda", "sdc"),))
    assert Check.TARGET_FORBIDDEN in checks(mapped)
    assert not any(m.path == "/dev/sdc" for m in mapped.matches)


def test_removable_without_identity_matches_by_model_and_size() -> None:
    stick = RemovableDevice("removable.sdc", "/dev/sdc", 20 * GIB, "usb", model="Cruzer")
    desc = replace(standard(), removable_devices=(stick,))
    plan = plan_for(desc, [actual("sdc", 20 * GIB, model="Cruzer"), actual("vdb", 30 * GIB)])
    assert matched(plan) == {"disk.sda": ("/dev/vdb", MatchBy.SIZE)}


def test_rescue_medium_and_recovery_set_disks_are_never_candidates() -> None:
    disks = [
        actual("sda", 20 * GIB, holds_system=True),
        actual("sdb", 20 * GIB, holds_recovery_set=True),
        actual("sdc", 20 * GIB, removable=True),
        actual("loop0", 20 * GIB),
    ]
    plan = plan_for(standard(), disks)
    assert plan.matches == ()
    assert checks(plan) == [Check.NO_DISK]
    for name in ("sda", "sdb"):
        forbidden = plan_for(standard(), disks, targets=(f"/dev/{name}",))
        assert Check.TARGET_FORBIDDEN in checks(forbidden)
    # Named explicitly, a removable disk or a loop device may be used.
    assert matched(plan_for(standard(), disks, targets=("/dev/sdc",)))["disk.sda"][0] == "/dev/sdc"
    assert matched(plan_for(standard(), disks, targets=("loop0",)))["disk.sda"][0] == "/dev/loop0"


def test_disk_in_use_is_a_precondition() -> None:
    disk_ = actual(
        "vdb", 20 * GIB, mounted=("vdb1 on /mnt",), swaps=("/dev/vdb2",), holders=("dm-0",)
    )
    plan = plan_for(standard(), [disk_])
    assert checks(plan) == [Check.TARGET_IN_USE]
    msg = plan.failures[0].message
    assert "vdb1 on /mnt" in msg and "/dev/vdb2" in msg and "dm-0" in msg


def test_saved_disk_with_mounted_filesystem_and_no_disk_left_fails() -> None:
    desc = two_disks(20 * GIB, 100 * GIB)
    plan = plan_for(desc, [actual("vdb", 20 * GIB)])
    assert matched(plan) == {"disk.sda": ("/dev/vdb", MatchBy.SIZE)}
    assert checks(plan) == [Check.NO_DISK]
    assert "disk.sdb" in plan.failures[0].message and "/srv" in plan.failures[0].message


def test_saved_disk_with_nothing_mounted_and_no_disk_left_is_a_warning() -> None:
    a, b = disk("sda", 20 * GIB), disk("sdb", 100 * GIB)
    pa, pb = part(a, 1, MIB, 19 * GIB), part(b, 1, MIB, 99 * GIB)
    desc = description(
        disks=[a, b],
        partitions=[pa, pb],
        filesystems=[ext4(pa.id, "/", GIB), ext4(pb.id, None, GIB)],
    )
    plan = plan_for(desc, [actual("vdb", 20 * GIB)])
    assert plan.ok, plan.failures
    assert any("disk.sdb" in w and "left out" in w for w in plan.warnings)


def test_unused_target_is_a_warning() -> None:
    disks = [actual("vdb", 20 * GIB), actual("vdc", 30 * GIB)]
    plan = plan_for(standard(), disks, targets=("vdb", "vdc"))
    assert plan.ok
    assert any("/dev/vdc is not used" in w for w in plan.warnings)
