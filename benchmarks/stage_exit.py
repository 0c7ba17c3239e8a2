"""Start-to-exit time of one `chemspec run` stage process, with and without the garbage collection that
Python runs as it exits (`chemspec.cli.entry` freezes the heap first, so that collection skips the
objects torch, lightning and transformers made).

A tiny CPU study is compiled and its data, split, TPE and selection run once; then the same train cell
runs --repeats times each way, alternating: `python -m chemspec run train …` (the entry point) and the
same `main()` called without the freeze, as the entry point did before. Medians and their ratio are
printed as JSON.

  python benchmarks/stage_exit.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_study, write_spec  # noqa: E402

WITHOUT_FREEZE = "import sys; from chemspec.cli import main; sys.exit(main(sys.argv[1:]))"


def chemspec(root: Path, *args: str, freeze: bool = True) -> float:
    command = [sys.executable, "-m", "chemspec"] if freeze else [sys.executable, "-c", WITHOUT_FREEZE]
    start = time.perf_counter()
    subprocess.run([*command, *args], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_spec(root / "study.yaml", tiny_study())
        chemspec(root, "compile", "study.yaml")
        for stage in (("data",), ("split",), ("tpe", "--cell", "lr3e-3-bs32"), ("tpe", "--cell", "lr1e-2-bs32"),
                      ("select",)):
            chemspec(root, "run", *stage)
        train = ("run", "train", "--cell", "xs-200")
        times: dict[str, list[float]] = {"freeze": [], "no_freeze": []}
        for _ in range(args.repeats):
            times["no_freeze"].append(chemspec(root, *train, freeze=False))
            times["freeze"].append(chemspec(root, *train))
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    print(json.dumps({"stage": "train@xs-200 (tiny study, CPU)", "repeats": args.repeats,
                      "seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()}, "median_s": medians,
                      "ratio": round(medians["no_freeze"] / medians["freeze"], 3)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
