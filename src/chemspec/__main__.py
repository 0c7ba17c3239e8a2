"""`python -m chemspec`: the `chemspec` command where no console script is installed. Lightning's DDP
launcher re-runs the command line of rank 0 for the other ranks, so this is also how a multi-GPU cell
starts on a machine where chemspec is on PYTHONPATH only."""

from chemspec.cli import entry

if __name__ == "__main__":
    entry()
