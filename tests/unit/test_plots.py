"""Figures: what a failed fit's panel says must be readable whole, inside the figure."""

from __future__ import annotations

from chemspec.runtime import plots

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


def test_the_iso_loss_figure_is_drawn_only_where_the_study_asked_for_the_joint_law(tmp_path):
    result = {"fits": [], "confidence": 0.95, "joint": None}
    plots.write_plots(ROWS, result, tmp_path / "power", "study", "painn")
    assert sorted(p.name for p in (tmp_path / "power").iterdir()) == [
        "residuals.png", "residuals.svg", "scaling.png", "scaling.svg"]
    plots.write_plots(ROWS, {**result, "joint": {"status": "cannot fit", "reason": "4 cells"}}, tmp_path / "joint",
                      "study", "painn")
    assert (tmp_path / "joint" / "joint.png").is_file()
