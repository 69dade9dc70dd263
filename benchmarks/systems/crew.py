"""crew (R) over TLS: a local controller (mirai underneath) with an automatic certificate.

The measures themselves are written in R, in `peers.R` beside this file.
"""

from __future__ import annotations

from rscript import RPackage

LABEL = "crew (R, TLS)"
ENVIRONMENT = None
_PEER = RPackage("crew")
missing, version, run = _PEER.missing, _PEER.version, _PEER.run
