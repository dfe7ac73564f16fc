from collections.abc import Callable

API: int

def make(records: memoryview | bytes, pos: int, lines: list[bytes], index: int, dir_fd: int,
         prefix: bytes, owner_uid: int, owner_gid: int, umask: int, setgid: bool,
         of: Callable[[memoryview], bytes], /) -> tuple[int, int, int, int]: ...
def ordered(lines: list[bytes], /) -> int: ...
