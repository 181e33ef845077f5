"""`toysuper validate`: any recipe graded on a standard ground-truth suite, against every built-in."""

from .api import BUILT_INS, validate
from .suite import SIZES, SUITE_VERSION, TASKS, listing

__all__ = ["BUILT_INS", "SIZES", "SUITE_VERSION", "TASKS", "listing", "validate"]
