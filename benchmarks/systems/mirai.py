"""mirai (R) over TLS: local daemons dial a TLS listener with a certificate made at start.

The measures themselves are written in R, in `peers.R` beside this file.
"""

from __future__ import annotations

from rscript import RPackage

LABEL = "mirai (R, TLS)"
ENVIRONMENT = None
_PEER = RPackage("mirai")
missing, version, run = _PEER.missing, _PEER.version, _PEER.run
