"""Integer codes for the enumerations that cross into kernels, defined once beside their names."""

from __future__ import annotations

# Instrument kinds (instruments.kind).
LINEAR, INVERSE, OPTION = 0, 1, 2
KIND_NAMES = ("linear", "inverse", "option")

# Option types (instruments.option_type); futures carry NO_OPTION.
NO_OPTION, CALL, PUT = -1, 0, 1
OPTION_TYPE_NAMES = ("call", "put")

# Account status, ordered by severity (SPEC §3).
HEALTHY, MARGIN_CALL, LIQUIDATABLE, BANKRUPT = 0, 1, 2, 3
STATUS_NAMES = ("healthy", "margin_call", "liquidatable", "bankrupt")

# "No such thing" for integer references (asset without underlying, instrument without schedule).
NONE = -1
