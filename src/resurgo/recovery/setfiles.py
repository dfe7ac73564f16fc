"""The files and labels of a recovery set (pure).

    description.toml, description.toml.sha256   the recovery description and its digest
    catalog.zst                                  the catalog of unchanged package files
    archives/<id>.archive, archives/<id>.manifest   one pair per resurgo:restore command
    rescue.iso                                   the bootable rescue image (optional)
    packages.txt, archives/<id>.pooled           a package-aware set's packages and each
                                                 tree's files they give back (pool.lists)
    package-changes.txt                          package files that differed from their
                                                 packages (pool.changes; when any did)
    secrets.age                                  the contents of the secret config files,
                                                 sealed in the description (encrypted sets
                                                 with secret files only; see secrets.py)

The index's labels say what a reader must know before reading anything: the resurgo
that wrote the set and whether its archives are encrypted (and for whom).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from resurgo import __version__
from resurgo.media import setindex

DESCRIPTION = "description.toml"
DESCRIPTION_DIGEST = "description.toml.sha256"
RESCUE = setindex.RESCUE
SECRETS = "secrets.age"
#: The SFTP server's host key as the save verified it (a known_hosts line), which the
#: set's rescue image checks the server against.
KNOWN_HOSTS = "known_hosts"

LABEL_VERSION = "resurgo"
LABEL_ENCRYPTION = "encryption"
LABEL_RECIPIENTS = "recipients"
AGE = "age"
NONE = "none"


def labels(recipients: Sequence[str]) -> dict[str, str]:
    out = {LABEL_VERSION: __version__, LABEL_ENCRYPTION: AGE if recipients else NONE}
    if recipients:
        # Public keys: they tell which secret key a restore will need.
        out[LABEL_RECIPIENTS] = " ".join(recipients)
    return out


def encrypted(set_labels: Mapping[str, str]) -> bool:
    return set_labels.get(LABEL_ENCRYPTION) == AGE


def recipients(set_labels: Mapping[str, str]) -> list[str]:
    return set_labels.get(LABEL_RECIPIENTS, "").split()
