"""Progress bars that stay quiet when nobody is watching."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(iterable, desc: str, quiet: bool = False, **kwargs):
    """A tqdm bar over `iterable`, off when `quiet` or when stderr is not a terminal."""
    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, disable=disable, leave=False, dynamic_ncols=True, **kwargs)
