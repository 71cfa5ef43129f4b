"""Run a script or a module with edgecnn imported from another source tree: an earlier commit, side by side.

    python benchmarks/baseline_boot.py SOURCE script.py ARGS...     # SOURCE: a tree with edgecnn/ export/ runtime/
    python benchmarks/baseline_boot.py SOURCE -m edgecnn ARGS...    # SOURCE '': the installed (working-tree) code

Both the "before" and the "after" rows of a benchmark start through here, so they pay the same start-up.
The editable install that `make` creates maps the package names to folders through a finder module; pointing
its mapping at SOURCE before anything imports edgecnn makes every import, lazy ones included, read SOURCE.
"""

from __future__ import annotations

import runpy
import sys


def use_source(source: str) -> None:
    """Import edgecnn, edgecnn.export and edgecnn.runtime from ``source`` from now on."""
    finder = next((m for n, m in list(sys.modules.items()) if n.startswith("__editable___edgecnn")), None)
    if finder is None:
        sys.exit("a baseline needs edgecnn installed in editable mode (`make` creates it)")
    if any(name == "edgecnn" or name.startswith("edgecnn.") for name in sys.modules):
        sys.exit("edgecnn was imported before its source could be chosen")
    finder.MAPPING.update({"edgecnn": f"{source}/edgecnn", "edgecnn.export": f"{source}/export",
                           "edgecnn.runtime": f"{source}/runtime"})


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    source, rest = sys.argv[1], sys.argv[2:]
    if source:
        use_source(source)
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
