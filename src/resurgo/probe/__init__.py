"""Read-only probes of the machine, one module per source; describe.py assembles them."""
