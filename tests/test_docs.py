"""The docs stay true to the code and to themselves: every config key is in the reference (docs/config.md),
and every relative link in README.md and docs/ points at a file that exists. No training; well under a second."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from ssgan.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_REFERENCE = ROOT / "docs/config.md"

FENCED = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.S | re.M)  # fenced code blocks
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
# [text](target "title") and ![alt](target), the text may hold one level of brackets: [see [1]](x.md)
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)  # [label]: target
HTML_LINK = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, mailto:, ... and //host


def config_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf of the config tree as a dotted key: `mode`, `data.name`, ..., `tricks.watchdog.patience`."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def documented_keys(text: str) -> set[str]:
    """The keys written as code in the reference: `train.epochs` (also inside a table cell)."""
    return set(re.findall(r"`([A-Za-z_][\w.]*)`", text))


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links, images, reference definitions and HTML src/href outside code, with
    their #fragment stripped; external URLs (http:, https:, mailto:, ...) and pure #anchors left out."""
    text = INLINE_CODE.sub("", FENCED.sub("", text))
    targets = MD_LINK.findall(text) + REF_DEF.findall(text) + HTML_LINK.findall(text)
    out = []
    for target in targets:
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path:
            out.append(path)
    return out


def broken_links(md: Path) -> list[str]:
    broken = []
    for target in relative_links(md.read_text(encoding="utf-8")):
        base = ROOT if target.startswith("/") else md.parent
        if not (base / target.lstrip("/")).exists():
            broken.append(target)
    return broken


def test_every_config_key_is_in_the_reference():
    keys = config_keys()
    assert len(keys) > 50 and "train.epochs" in keys and "tricks.watchdog.patience" in keys
    missing = sorted(set(keys) - documented_keys(CONFIG_REFERENCE.read_text(encoding="utf-8")))
    assert not missing, f"config keys missing from {CONFIG_REFERENCE.relative_to(ROOT)}: {', '.join(missing)}"


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md: Path):
    broken = broken_links(md)
    assert not broken, f"{md.relative_to(ROOT)} links to missing files: {', '.join(broken)}"


def test_the_link_checker_sees_links():
    text = ("[a](docs/a.md#x) ![b](img/b.png \"t\") [c](https://x.org) [d](#top) [e](mailto:me@x.org)\n"
            "`[f](not/a/link.md)` <img src=\"c.png\" width=3>\n```\n[g](code.md)\n```\n[h]: ref/h.md\n"
            "[see [1]](nested.md)\n")
    assert relative_links(text) == ["docs/a.md", "img/b.png", "nested.md", "ref/h.md", "c.png"]
    assert "train.epochs" in documented_keys("| `train.epochs` | int | `10` |")
