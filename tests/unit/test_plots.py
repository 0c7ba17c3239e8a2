"""Figures: what a failed fit's panel says must be readable whole, inside the figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chemspec import api
from chemspec.runtime import plots
from chemspec.specs.outputs import figures
from tests.conftest import tiny_study

QUICKSTART = Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml"

ROWS = [{"model": f"w{n}", "params": n, "data_size": d, "val_loss": 2.0 - 0.1 * i - 0.05 * j, "status": "ok"}
        for i, n in enumerate((1_000, 10_000)) for j, d in enumerate((100, 1_000))]


def test_a_failed_joint_fit_names_its_whole_reason_within_the_figure():
    reason = ("the best fit puts an exponent on a bound (0 or 3): the data do not identify it; "
              "add model or data sizes, or fit the per-axis laws only")
    plt = plots._pyplot()
    fig = plots._joint(plt, ROWS, {"status": "cannot fit", "reason": reason}, "study", plots.AXES["painn"])
    fig.canvas.draw()
    title = fig.axes[0].title
    assert " ".join(title.get_text().split()) == f"joint fit: {reason}"
    box, frame = title.get_window_extent(), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1
    plt.close(fig)


@pytest.mark.parametrize("laws", [["power"], ["power", "joint"]])
@pytest.mark.parametrize("sampled", [False, True])
def test_the_fit_stage_draws_the_figures_dvc_yaml_declares(tmp_path, laws, sampled):
    """The iso-loss figure only where the study asks for the joint law; the generation figure wherever it has
    sample cells, also when none of them finished with molecules to score."""
    root = tmp_path / "project"
    root.mkdir()
    spec = yaml.safe_load(QUICKSTART.read_text())
    spec["fit"] = {**spec.get("fit", {}), "laws": laws}
    if not sampled:
        del spec["generation"]
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    api.compile(str(root / "study.yaml"), root=str(root))
    declared = yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
    names = figures(laws, sampled)
    assert [p for p in declared if isinstance(p, str)] == [f"results/quickstart/fit/plots/{n}.png" for n in names]
    joint = {"status": "cannot fit", "reason": "4 cells"} if "joint" in laws else None
    plots.write_plots(ROWS, {"fits": [], "confidence": 0.95, "joint": joint}, tmp_path / "plots", "study", "painn",
                      names)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f"{n}.{kind}" for n in names
                                                                             for kind in ("png", "svg"))


@pytest.mark.parametrize("laws", [["power"], ["power", "joint"]])
def test_the_fit_stage_leaves_exactly_the_figures_its_dvc_yaml_declares(cli, tmp_path, laws):
    from tests.unit.test_report import fitted

    results = fitted(cli, tmp_path, tiny_study(**{"fit.laws": laws}))
    declared = [p for p in yaml.safe_load((tmp_path / "dvc.yaml").read_text())["plots"] if isinstance(p, str)]
    drawn = sorted(p.relative_to(tmp_path).as_posix() for p in (results / "fit" / "plots").glob("*.png"))
    assert drawn == sorted(declared) and len(drawn) == len(laws) + 1
