"""What the bench scripts share on their command lines: comma-separated lists checked before any work
starts, and ssgan's errors (a bad config key, no GPU, no dataset) as one line. A bad value is a one-line
error with exit status 1, at once, not a traceback minutes into a benchmark."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssgan.errors import SSGANError  # noqa: E402


def run_main(main: Callable[[], None]) -> None:
    """Call a script's main; an SSGANError ends it with its one-line message."""
    try:
        main()
    except SSGANError as e:
        sys.exit(f"error: {e}")


def int_list(text: str, flag: str, minimum: int = 0, example: str = "0,1,2") -> list[int]:
    """'0,1,2' -> [0, 1, 2]: distinct integers >= minimum, at least one."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum or len(set(values)) != len(values):
        sys.exit(f"error: {flag} takes distinct comma-separated integers >= {minimum} (e.g. {example}), got {text!r}")
    return values


def name_list(text: str, flag: str, allowed: Iterable[str]) -> list[str]:
    """'mlp,conv' -> ['mlp', 'conv']: names from `allowed`, at least one."""
    allowed = list(allowed)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        sys.exit(f"error: {flag} takes comma-separated names from {', '.join(allowed)}, got {text!r}")
    return names
