"""Test-wide settings."""

import os

from hypothesis import settings

# In CI, property tests draw the same examples every run, so a submission's result does not depend on the
# draw; on developer machines they explore new ones (and remember failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
