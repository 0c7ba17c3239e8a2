"""Render cells into dvc.yaml and params.yaml: a pure function of the cells, byte-identical every time.

The files are built as plain dicts and dumped with a fixed key order, so no template holds logic.
Per-cell stages use DVC's `foreach`, which gives them the readable names `tpe@<hp>` and
`train@<size>-<n>`. A stage's command carries its cell's identity (the hash of the fields that
change its result), and that is how DVC sees a changed cell: editing one model size changes the
commands of that size's cells and nothing upstream. Stages declare no `params` dependencies: DVC
re-reads and re-parses the whole params file for every stage that names it, which made a no-op
`dvc repro` of a 200-cell study take 160 s (BENCHMARKS.md); the identity is also what keeps DVC's
run cache honest (a changed params section can be missed by it, treeverse/dvc#10296; a changed
command cannot), and the stage refuses to run when params.yaml no longer matches the identity.
"""

from __future__ import annotations

import shlex

import yaml

from chemspec.compiler.cells import Cell, Cells, identity

PARAMS = "params.yaml"
PIPELINES = "pipelines"
SPLIT_ABOVE = 48
"""Grids of more train cells than this get one dvc.yaml per model size under pipelines/, so that no
dvc.yaml or dvc.lock grows with the whole grid (a no-op repro of 200 cells: 5.0 s split, 5.7 s not)."""


def short_identity(cell: Cell) -> str:
    return identity(cell)[:16]


def _cmd(stage: str, cell: Cell) -> str:
    return shlex.join(["chemspec", "run", stage, "--params", PARAMS, "--identity", short_identity(cell)])


def _cell_cmd(stage: str) -> str:
    # ${key}/${item.identity} are DVC's foreach variables: a validated name and a hex digest.
    return shlex.join(["chemspec", "run", stage, "--params", PARAMS]) + " --cell ${key} --identity ${item.identity}"


def _data_files(cells: Cells) -> list[str]:
    """What training reads: token ids and the tokenizer, or the atoms store."""
    d = cells.data.out_dir
    return [f"{d}/atoms.npz"] if cells.data.kind == "atoms" else [f"{d}/tokens.npy", f"{d}/tokenizer"]


def _data_outs(cells: Cells) -> list[str]:
    d = cells.data.out_dir
    extra = [] if cells.data.kind == "atoms" else [f"{d}/molecules.csv"]
    return extra + _data_files(cells) + [f"{d}/data.json"]


def _split_outs(cells: Cells) -> list[str]:
    s = cells.split.out_dir
    return [f"{s}/val.npy", f"{s}/test.npy"] + [f"{s}/train-{n}.npy" for n in cells.split.sizes] \
        + [f"{s}/split.json"]


def _train_deps(cells: Cells, size_ref: str, test: bool) -> list[str]:
    s = cells.split.out_dir
    return _data_files(cells) + [f"{s}/train-{size_ref}.npy", f"{s}/val.npy"] + ([f"{s}/test.npy"] if test else [])


def _calibration_stages(cells: Cells, tpe_size: int) -> dict:
    if cells.calibration is None:
        return {}
    results = cells.calibration.out_dir.rsplit("/", 1)[0]
    return {
        "calibrate": {
            "foreach": {key: {"identity": short_identity(cell)} for key, cell in cells.calibrate.items()},
            "do": {
                "cmd": _cell_cmd("calibrate"),
                "deps": _train_deps(cells, str(tpe_size), test=False),
                "outs": [f"{results}/calibrate/${{key}}"],
            },
        },
        "calibration": {
            "cmd": _cmd("calibration", cells.calibration),
            "deps": sorted(set(cells.calibration.tpe_dirs.values()) | set(cells.calibration.full_dirs.values())),
            "outs": [f"{cells.calibration.out_dir}/scatter.png"],
            "metrics": [{f"{cells.calibration.out_dir}/calibration.json": {"cache": False}}],
        },
    }


def _train_stage(cells: Cells, keys: list[str]) -> dict:
    train_dir = cells.fit.out_dir.rsplit("/", 1)[0] + "/train"
    return {"train": {
        "foreach": {key: {"data_size": cells.train[key].data_size, "identity": short_identity(cells.train[key])}
                    for key in keys},
        "do": {
            "cmd": _cell_cmd("train"),
            "deps": _train_deps(cells, "${item.data_size}", test=True) + [cells.select.out],
            "outs": [f"{train_dir}/${{key}}/model", f"{train_dir}/${{key}}/loss.csv"],
            "metrics": [f"{train_dir}/${{key}}/metrics.json"],
        },
    }}


def _sample_stage(cells: Cells, keys: list[str]) -> dict:
    keys = [key for key in keys if key in cells.sample]
    if not keys:
        return {}
    first = cells.sample[keys[0]]
    d, s, results = cells.data.out_dir, cells.split.out_dir, first.out_dir.rsplit("/", 1)[0]
    train = first.train_dir.rsplit("/", 1)[0]
    return {"sample": {
        "foreach": {key: {"data_size": cells.sample[key].data_size, "identity": short_identity(cells.sample[key])}
                    for key in keys},
        "do": {
            "cmd": _cell_cmd("sample"),
            "deps": [f"{train}/${{key}}/model", f"{train}/${{key}}/metrics.json", f"{d}/molecules.csv",
                     f"{s}/train-${{item.data_size}}.npy", f"{first.reference_dir}/reference.npz"],
            "outs": [f"{results}/${{key}}/samples.csv"],
            "metrics": [f"{results}/${{key}}/generation.json"],
        },
    }}


def _reference_stage(cells: Cells) -> dict:
    if cells.reference is None:
        return {}
    return {"reference": {
        "cmd": _cmd("reference", cells.reference),
        "deps": [f"{cells.data.out_dir}/molecules.csv", f"{cells.split.out_dir}/test.npy"],
        "outs": [f"{cells.reference.out_dir}/reference.npz"],
        # Its time and device, kept out of what the sample stages depend on: a rerun resamples nothing.
        "metrics": [{f"{cells.reference.out_dir}/reference.json": {"cache": False}}],
    }}


def split_pipeline(cells: Cells) -> bool:
    return len(cells.train) > SPLIT_ABOVE


def size_pipelines(cells: Cells) -> dict[str, dict]:
    """{pipelines/<size>/dvc.yaml: document}: the train and sample stages of each model size, run from
    the project root (`wdir`), so every path and command reads as in the root dvc.yaml."""
    groups: dict[str, list[str]] = {}
    for key, cell in cells.train.items():
        groups.setdefault(cell.size_name, []).append(key)
    documents = {}
    for size, keys in groups.items():
        stages = {**_train_stage(cells, keys), **_sample_stage(cells, keys)}
        for stage in stages.values():
            stage["do"] = {"wdir": "../..", **stage["do"]}
        documents[f"{PIPELINES}/{size}/dvc.yaml"] = {"stages": stages}
    return documents


def dvc_pipeline(cells: Cells, source_file: str | None) -> dict:
    tpe_size = next(iter(cells.tpe.values())).data_size
    results = cells.fit.out_dir.rsplit("/", 1)[0]
    tpe_dir = f"{results}/tpe"
    stages: dict = {
        "data": {
            "cmd": _cmd("data", cells.data),
            **({"deps": [source_file]} if source_file else {}),
            "outs": _data_outs(cells),
        },
        "split": {
            "cmd": _cmd("split", cells.split),
            "deps": [f"{cells.data.out_dir}/data.json"],
            "outs": _split_outs(cells),
        },
        "tpe": {
            "foreach": {key: {"data_size": cell.data_size, "identity": short_identity(cell)}
                        for key, cell in cells.tpe.items()},
            "do": {
                "cmd": _cell_cmd("tpe"),
                "deps": _train_deps(cells, str(tpe_size), test=False),
                "outs": [f"{tpe_dir}/${{key}}"],
            },
        },
        **_calibration_stages(cells, tpe_size),
        "select": {
            "cmd": _cmd("select", cells.select),
            "deps": list(cells.select.tpe_dirs.values()),
            "outs": [cells.select.out],
        },
        **_reference_stage(cells),
        **({} if split_pipeline(cells) else {**_train_stage(cells, list(cells.train)),
                                               **_sample_stage(cells, list(cells.train))}),
        "fit": {
            "cmd": _cmd("fit", cells.fit),
            "deps": list(cells.fit.metrics.values()) + list(cells.fit.generation.values()) + [cells.fit.selected],
            "outs": [f"{cells.fit.out_dir}/cells.json", f"{cells.fit.out_dir}/plots"],
            "metrics": [{f"{cells.fit.out_dir}/fit.json": {"cache": False}}],
        },
        "archive": {
            "cmd": _cmd("archive", cells.archive),
            "deps": sorted(set(cells.archive.inputs.values()) | set(cells.fit.metrics.values())
                           | {cell.out_dir + "/model" for cell in cells.train.values()}  # hashed into the manifest
                           | set(cells.fit.generation.values()) | set(cells.select.tpe_dirs.values())),
            "outs": [{f"{cells.archive.root}/refs/{cells.archive.study}.json": {"cache": False,
                                                                                "persist": True}}],
        },
    }
    fit = cells.fit.out_dir
    figures = ("scaling", "joint", "residuals") + (("generation",) if cells.sample else ())
    plots = [f"{fit}/plots/{name}.png" for name in figures] + [
        {"val_loss_by_data_size": {"template": "scatter", "x": "data_size",
                                   "y": {f"{fit}/cells.json": "val_loss"}}},
        {"val_loss_by_params": {"template": "scatter", "x": "params", "y": {f"{fit}/cells.json": "val_loss"}}}]
    return {"stages": stages, "plots": plots}


def params(cells: Cells) -> dict:
    return {"cells": cells.model_dump(mode="json")}


def dump(document: dict, header: str) -> str:
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)
    return header + body


def render(cells: Cells, spec_path: str, source_file: str | None) -> dict[str, str]:
    """{relative path: text} of every file the compiler writes."""
    shown = spec_path if spec_path.isprintable() else repr(spec_path)  # a line break would end the comment
    header = f"# Generated by `chemspec compile {shown}`; edit the spec, not this file.\n"
    files = {"dvc.yaml": dump(dvc_pipeline(cells, source_file), header), PARAMS: dump(params(cells), header)}
    if split_pipeline(cells):
        files.update({path: dump(document, header) for path, document in size_pipelines(cells).items()})
    return files
