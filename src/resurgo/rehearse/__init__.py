"""`resurgo rehearse`: a recovery set restored by its own rescue image onto blank virtual
disks, the recovered system booted and checked from inside, the time of each phase
measured.

The guest side (the rescue in rehearsal mode, the check the recovered system runs) and the
host side (qemu, the disk images, the report) speak through lines on the serial console:
``protocol``.
"""
