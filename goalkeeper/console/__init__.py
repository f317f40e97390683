"""The staff console (DESIGN §10): read-only pages for the provider's security staff on the
daemon's HTTP port, behind the admin token.

It reads the state store through `StateStore.browse` only, and asks the daemon for nothing but
a tick (the scan-now button, through POST /scan); it never imports the tick, the pipeline or
delivery. Templates escape every value; no page runs a script.
"""

from goalkeeper.console.routes import Console

__all__ = ["Console"]
