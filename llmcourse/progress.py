"""Progress bars that render the same way in a terminal, a notebook and the built book.

The bar is text (no widgets, so the book loads nothing from outside), writes to
stdout, refreshes every ``total // 20`` steps rather than on a clock, and shows
no times or rates: a notebook re-run therefore prints exactly the same bar, and
its stored output can be checked by nbval.
"""

from __future__ import annotations

import sys

from tqdm.std import tqdm

tqdm.monitor_interval = 0  # no monitor thread: refreshes happen only when we ask

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt}{postfix}"


def progress_bar(total: int, desc: str = "", enabled: bool = True) -> tqdm:
    """A deterministic text progress bar over ``total`` steps."""
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        file=sys.stdout,
        bar_format=BAR_FORMAT,
        mininterval=0,
        miniters=max(1, total // 20),
        ncols=80,
        ascii=False,
        dynamic_ncols=False,
    )
