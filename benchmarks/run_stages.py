"""Run stages of a compiled study in order, in one process, without DVC (for a GPU machine that has no
DVC): `python benchmarks/run_stages.py --params params.yaml tpe calibrate calibration`. Each stage runs
every one of its cells (or those --cells matches), exactly as `chemspec run <stage> --cell <key>`
would; cells whose results exist are skipped, and a cell stopped part-way resumes from its checkpoint."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from chemspec import api
from chemspec.runtime import PER_CELL


def _done(out_dir: str) -> bool:
    folder = Path(out_dir)
    return any((folder / name).is_file() for name in ("estimate.json", "metrics.json", "generation.json"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stages", nargs="+", help="stage names, in the order to run them")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cells", default="", help="run only the cells whose key matches this regex")
    args = parser.parse_args()
    cells = api.load_cells(args.params)
    timings = {}
    for stage in args.stages:
        keys = ([k for k in sorted(getattr(cells, stage)) if re.search(args.cells, k)] if stage in PER_CELL
                else [None])
        for key in keys:
            if key is not None and _done(getattr(cells, stage)[key].out_dir):
                print(f"{stage}@{key}: done before, skipped", flush=True)
                continue
            start = time.perf_counter()
            result = api.run(stage, args.params, key)
            name = f"{stage}@{key}" if key else stage
            timings[name] = round(time.perf_counter() - start, 2)
            brief = {k: v for k, v in result.items() if k in ("val_loss", "wall_time_s", "steps")}
            print(f"{name}: {timings[name]} s {json.dumps(brief)}", flush=True)
    print(json.dumps({"timings_s": timings}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
