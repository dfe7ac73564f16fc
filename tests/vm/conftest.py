"""What every vm test needs of the host, and what they share: the signing keys and the
rescue images (tests/vm/rescue_images.py), made once per run, in the run's temporary
directory under a lock (a second pytest-xdist worker would wait for it and reuse it).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from resurgo.rescue import RescueReport
from tests.vm import guest, rescue_images
from tests.vm.rescue_images import Keys

#: Programs the vm tier runs on the host (./dev installs them all).
HOST_TOOLS = ("qemu-system-x86_64", "qemu-img", "lsinitrd", "zstd", "xorriso", "ssh-keygen",
              "mkfs.ext4", "sfdisk", "losetup")

T = TypeVar("T")


@pytest.fixture(scope="session")
def vm_host() -> None:
    """Root (loop devices, mounts, chroot), qemu, OVMF and the host's tools, or a skip
    that names what is missing."""
    if os.geteuid() != 0:
        pytest.skip("the vm tier needs root (loop devices, chroot)")
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    missing += [str(p) for p in (guest.OVMF_FD, guest.OVMF_CODE, guest.OVMF_VARS) if not p.exists()]
    if missing:
        pytest.skip(f"the vm tier needs {', '.join(missing)} on the host (./dev installs them)")


@pytest.fixture(autouse=True)
def _vm_tests_need_the_host(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("vm") is not None:
        request.getfixturevalue("vm_host")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's directory for what every worker shares (xdist's workers have their
    base temporary directories side by side in the run's)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "vm-shared"
    path.mkdir(exist_ok=True)
    return path


def made_once(directory: Path, name: str, make: Callable[[Path], T]) -> T:
    """``make(directory/name)`` in the first worker to ask; the others wait for it and
    get the same result (pickled beside it)."""
    done = directory / f"{name}.pickle"
    with guest.locked(directory / f"{name}.lock"):
        if done.exists():
            result: T = pickle.loads(done.read_bytes())
            return result
        work = directory / name
        work.mkdir(exist_ok=True)
        result = make(work)
        done.write_bytes(pickle.dumps(result))
        return result


@pytest.fixture(scope="session")
def tree() -> Path:
    return guest.debian_tree()


@pytest.fixture(scope="session")
def keys(shared_dir: Path) -> Keys:
    return made_once(shared_dir, "keys", rescue_images.make_keys)


@pytest.fixture(scope="session")
def desc_file(shared_dir: Path) -> Path:
    """The description the sysroot image embeds (host "rescued")."""
    return made_once(shared_dir, "description",
                     lambda d: rescue_images.write_description(d / "description.toml"))


@pytest.fixture(scope="session")
def rescue(shared_dir: Path, tree: Path, keys: Keys, desc_file: Path) -> RescueReport:
    """The image built from the tree (sysroot), the description embedded."""
    return made_once(shared_dir, "sysroot-image",
                     lambda d: rescue_images.build_sysroot_image(d, tree, keys, desc_file))


@pytest.fixture(scope="session")
def extracted(shared_dir: Path, rescue: RescueReport) -> Path:
    """The sysroot image's files (its kernel and initramfs boot without GRUB)."""
    return made_once(shared_dir, "sysroot-files",
                     lambda d: rescue_images.extract(rescue.path, d / "files"))


@pytest.fixture(scope="session")
def kernel_root_image(shared_dir: Path, tree: Path, keys: Keys) -> RescueReport:
    """This host's programs, the tree's kernel, no description."""
    return made_once(shared_dir, "kernel-root-image",
                     lambda d: rescue_images.build_kernel_root_image(d, tree, keys))


@pytest.fixture(scope="session")
def kernel_root_files(shared_dir: Path, kernel_root_image: RescueReport) -> Path:
    return made_once(shared_dir, "kernel-root-files",
                     lambda d: rescue_images.extract(kernel_root_image.path, d / "files"))
