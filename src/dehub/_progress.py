"""Progress bars for long steps (tqdm on stderr), silent unless asked for."""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["progress_bar"]


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


#: Seconds before a bar first shows: work that ends (or fails) sooner prints nothing, so a
#: quick step or a one-line input error is not wrapped in a flash of progress output.
SHOW_AFTER_S = 0.5


@contextmanager
def progress_bar(total: int | None, desc: str, enable: bool, unit: str = "it"):
    """A tqdm bar when ``enable`` is true (shown once the step has run :data:`SHOW_AFTER_S`
    seconds), otherwise an object that ignores updates."""
    if not enable:
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, delay=SHOW_AFTER_S) as bar:
        yield bar
