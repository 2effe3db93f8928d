"""The command line's progress bar: one tqdm bar per stage, on stderr, and none when stderr is not a terminal
(a log file gets the printed rows, not carriage returns) or the user asked for `--quiet`."""

from __future__ import annotations

import sys
from typing import Any


class StageBar:
    """Call `update(stage, done, total)` with each progress event; a new stage closes the old bar."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.stage: str | None = None
        self.bar: Any = None

    def update(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            from tqdm import tqdm

            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, leave=False, file=sys.stderr, disable=None)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None
