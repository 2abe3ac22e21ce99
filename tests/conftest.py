"""Shared test setup: quiet progress bars, a small-size switch for notebooks."""

import os

os.environ.setdefault("M2M_NO_PROGRESS", "1")
