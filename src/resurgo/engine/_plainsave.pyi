from collections.abc import Callable

API: int

def save_run(dir_fd: int, names: list[bytes], index: int, stop: int, prefix: bytes,
             device: int, set_index: int, room: int, room_entries: int,
             of: Callable[[memoryview], bytes], /) -> tuple[int, int, bytes, bytes, int, int]: ...
def sorted_names(dir_fd: int, /) -> list[bytes]: ...
