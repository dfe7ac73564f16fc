"""Where recovery sets live: a directory or USB disk, an SFTP server, an S3
bucket, a floppy image for the description alone.

    medium = open_medium("s3://bucket/host1", MediumOptions(s3_endpoint="https://10.0.0.5:8333"))
    with medium.begin_set(SetMeta(SetKind.FULL, host="db1")) as w:
        with w.create("archives/root.tar.zst") as f:
            engine.write_archive(f)          # any binary stream writer
        w.write_bytes("description.toml", text)
        w.commit()                           # the set appears, whole, only here
    reader = medium.open_set(medium.list_sets()[-1].id)
    reader.check()                           # every file there with its size
    with reader.open("archives/root.tar.zst") as f: ...   # sha256 checked at the end
"""

from resurgo.media.base import Medium, SetInfo, SetReader, SetWriter
from resurgo.media.open import MediumOptions, open_medium
from resurgo.media.prune import PrunePlan, Retention, plan_prune, plan_retention, prune
from resurgo.media.setindex import FileEntry, SetIndex, SetKind, SetMeta, new_set_id
from resurgo.media.sftp import SshOptions
from resurgo.media.streams import FileReader, FileWriter

__all__ = [
    "FileEntry",
    "FileReader",
    "FileWriter",
    "Medium",
    "MediumOptions",
    "PrunePlan",
    "Retention",
    "SetIndex",
    "SetInfo",
    "SetKind",
    "SetMeta",
    "SetReader",
    "SetWriter",
    "SshOptions",
    "new_set_id",
    "open_medium",
    "plan_prune",
    "plan_retention",
    "prune",
]
