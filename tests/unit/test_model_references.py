"""The references between records, declared once on the model's fields."""

from __future__ import annotations

from dataclasses import fields

from resurgo import model
from resurgo.model import (
    REF,
    Description,
    Filesystem,
    Link,
    LogicalVolume,
    LvSegment,
    LvType,
    Mount,
    PhysicalVolume,
    RaidArray,
    Subvolume,
    Swap,
)


def _ref_fields() -> list[tuple[str, str, model.Ref]]:
    out = []
    for name in dir(model):
        cls = getattr(model, name)
        if isinstance(cls, type) and hasattr(cls, "__dataclass_fields__"):
            out += [(cls.__name__, f.name, f.metadata[REF])
                    for f in fields(cls) if REF in f.metadata]
    return out


def test_every_reference_names_groups_of_the_description() -> None:
    groups = {f.name for f in fields(Description)}
    found = _ref_fields()
    assert len(found) == 19  # the count rules.py checked one by one
    for cls, name, ref in found:
        assert ref.groups and set(ref.groups) <= groups, (cls, name)
        assert ref.what, (cls, name)


def test_the_references_of_a_record_own_fields_first_then_nested() -> None:
    lv = LogicalVolume(id="lv.a", volume_group="vg.a", name="a", uuid="u", size=1,
                       type=LvType.THIN, pool="lv.pool",
                       segments=(LvSegment(0, 1, "thin", devices=("pv.a", "pv.b")),))
    assert [(r.where, r.target, r.ref.link) for r in model.references(lv, ("lvs", 3))] == [
        (("lvs", 3, "volume_group"), "vg.a", Link.ON),
        (("lvs", 3, "pool"), "lv.pool", Link.ON),
        (("lvs", 3, "segments", 0, "devices", 0), "pv.a", Link.ON),
        (("lvs", 3, "segments", 0, "devices", 1), "pv.b", Link.ON),
    ]
    fs = Filesystem(id="fs.a", device="part.a", type=model.FsType.BTRFS,
                    mounts=(Mount("/"), Mount("/home", subvolume="sv.home")))
    assert [(r.where, r.target) for r in model.references(fs)] == [
        (("device",), "part.a"), (("mounts", 1, "subvolume"), "sv.home")]
    # A swap file names no device.
    sw = Swap(id="swap.a", size=1, file="/swapfile", filesystem="fs.a")
    assert [r.target for r in model.references(sw)] == ["fs.a"]


def test_devices_below_and_referrers() -> None:
    md = RaidArray(id="md.0", path="/dev/md0", level="raid1", metadata="1.2", uuid="u",
                   members=("part.a", "part.b"), size=1, spares=("part.c",))
    assert model.devices_below(md) == ["part.a", "part.b", "part.c"]
    thin = LogicalVolume(id="lv.t", volume_group="vg.a", name="t", uuid="u", size=1,
                         type=LvType.THIN, pool="lv.pool")
    assert model.devices_below(thin) == ["lv.pool"]
    sv = Subvolume(id="sv.a", filesystem="fs.a", path="a", subvol_id=256)
    assert model.devices_below(sv) == []
    pvs = [PhysicalVolume(id=f"pv.{n}", device=f"part.{n}", uuid="u", volume_group="vg.a",
                          size=1) for n in "ab"]
    assert model.referrers(pvs, Link.HOLDS) == {"vg.a": pvs}
    assert model.referrers(pvs) == {"part.a": [pvs[0]], "part.b": [pvs[1]]}
    assert model.referrers([thin], into="volume_groups") == {"vg.a": [thin]}


def test_thin_volumes_whose_pools_name_each_other_are_refused() -> None:
    from resurgo.fileformat import rules
    from resurgo.model import VolumeGroup
    from tests.support.builders import description

    vg = VolumeGroup(id="vg.a", name="a", uuid="u", extent_size=4 << 20, size=1 << 30)
    one = LogicalVolume(id="lv.one", volume_group="vg.a", name="one", uuid="u1", size=1 << 20,
                        type=LvType.THIN, pool="lv.two")
    two = LogicalVolume(id="lv.two", volume_group="vg.a", name="two", uuid="u2", size=1 << 20,
                        type=LvType.THIN, pool="lv.one")
    problems = [str(p) for p in rules.check(description(volume_groups=(vg,),
                                                        logical_volumes=(one, two)))]
    assert any("'lv.one' is built on itself" in p for p in problems), problems
    assert any("'lv.two' is built on itself" in p for p in problems), problems
