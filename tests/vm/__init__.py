"""The vm test tier: qemu guests (see guest.py)."""
