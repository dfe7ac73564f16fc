"""A restored FAT filesystem is mounted with the saved options that make up its
permissions (FAT stores none): the rest of the saved options stay out."""

from resurgo.plan.actions import _fat_permission_options


def test_the_permission_options_of_a_saved_esp_mount() -> None:
    saved = (
        "rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,"
        "shortname=mixed,utf8,errors=remount-ro"
    )
    assert _fat_permission_options(saved) == ("fmask=0077", "dmask=0077")
    assert _fat_permission_options("umask=0077,nofail") == ("umask=0077",)
    assert _fat_permission_options("uid=1000,gid=100,defaults") == ("uid=1000", "gid=100")
    assert _fat_permission_options("defaults") == ()
