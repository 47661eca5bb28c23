"""Params profiles run in a copy of the tree (``profile``), the CI NLL gate (``regression``) and the
offline rehearsal of the paper profile (``rehearsal``)."""
