"""The `bgrun` command's entry point (and `python -m bgrun`'s).

`bgrun exec` lines plain enough are queued without importing Click (execwords.py);
everything else is the Click command line in cli.py.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point."""
    from bgrun.execwords import fast_exec

    if not fast_exec(sys.argv[1:]):
        from bgrun.cli import main as click_main

        click_main()
