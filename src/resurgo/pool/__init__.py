"""Package-aware sets: unchanged package files taken from a pool of packages on the medium.

A save with ``--packages pool`` leaves out of its archives every file the catalog lists as
unchanged (its content what its package says): the set records, per tree, each such file
with the metadata the system has (``pooled.py``), and the packages they come from
(``setlist.py``); the packages themselves go into the medium's pool (``store.py``), one file
per package, named by its sha256 and shared by every host and set of the medium. Save takes
them from the system's package cache or downloads them (``obtain.py``), each checked against
what the package manager and the catalog say (``deb.py`` reads them). A recovery checks
every package a set needs before any disk is touched (``needs.py``) and writes the pooled
files beside the archive's entries, inside the restore's confinement (``extract.py``: worker
processes, ``worker.py``; a package's xz blocks decoded by threads, ``xzblocks.py``).
``verify --packages ROOT`` checks a root's package files against the catalog (``check.py``).
"""
