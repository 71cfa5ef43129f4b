"""Self-contained HTML pages (inline style, no scripts, relative links) for visualize and the training report."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from ..fileio import atomic_write_text


def check_references(folder: str | os.PathLike, files: Sequence[str]) -> None:
    """Every file a page shows must exist beside it, under a relative path (the page must work offline)."""
    bad = [f for f in files if Path(f).is_absolute() or ".." in Path(f).parts or "://" in f]
    missing = [f for f in files if not (Path(folder) / f).is_file()]
    assert not bad and not missing, f"page would reference {bad or missing}"


def figure(file: str, caption: str, *, width: int | None = None) -> str:
    style = f' style="width:{width}px"' if width else ""
    return (f'<figure><img src="{html.escape(file)}" alt="{html.escape(caption)}"{style}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_page(title: str, body: str) -> str:
    """A self-contained page: inline style, no scripts, no external assets."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
figure {{ margin: 0 0 2em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #555; margin-top: .3em; max-width: 60em; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 1em; }} .gallery figure {{ margin: 0; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }} td, th {{ padding: 2px 12px 2px 0; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def write_index(out_dir: str | os.PathLike, entries: Sequence[tuple[str, str]], *, title: str,
                intro: str = "", outro: str = "", name: str = "index.html") -> Path:
    """An offline HTML page showing each (relative file, caption) pair, then ``outro``; every file must exist."""
    check_references(out_dir, [f for f, _ in entries])
    target = Path(out_dir) / name
    body = intro + "\n" + "\n".join(figure(f, c) for f, c in entries) + ("\n" + outro if outro else "")
    atomic_write_text(target, html_page(title, body))
    return target


