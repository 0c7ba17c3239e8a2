"""The `chemspec` command (its console script, and `python -m chemspec` where none is installed). Lightning's
DDP launcher re-runs the command line of rank 0 for the other ranks, so this is also how a multi-GPU cell
starts on a machine where chemspec is on PYTHONPATH only."""

import sys

from chemspec.errors import INTERRUPTED


def main() -> None:
    """The CLI, whose imports take a moment: a Ctrl-C during them gets the one line of a Ctrl-C after them,
    not a traceback."""
    try:
        from chemspec.cli import entry
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    entry()


if __name__ == "__main__":
    main()
