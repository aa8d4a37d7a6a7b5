"""Notebook 05's figures: plain Figures (never pyplot) of a report dict, partial runs included."""

from __future__ import annotations

from matplotlib.figure import Figure

from lgl_helpers.notebook import report_figures

REPORT = {
    "stage1": {"eer": 19.0, "val_eer": 21.25, "untrained_eer": 35.5},
    "baseline": {
        "eer": 17.5,
        "evaluations": [{"iteration": 1, "eer": 18.0}, {"iteration": 1, "eer": 17.5}, {"iteration": 2, "eer": 17.8}],
    },
    "lgl": None,
    "clustering": [{"mode": "stage1", "iteration": 0, "nmi": 0.66}, {"mode": "baseline", "iteration": 1, "nmi": 0.7}],
}


def test_every_report_figure_is_a_plain_figure():
    figures = report_figures.report_figures(REPORT)
    assert sorted(figures) == ["det", "eer_by_system", "nmi_per_iteration", "stage2_eer"]
    # no figure manager: pyplot does not know them, so nothing is shown twice or kept alive
    assert all(isinstance(fig, Figure) and fig.canvas.manager is None for fig in figures.values())


def test_bars_and_curves_show_what_ran():
    bars = report_figures.plot_eer_by_system(REPORT).axes[0]
    assert [tick.get_text() for tick in bars.get_xticklabels()] == ["untrained", "stage1", "baseline"]
    curves = report_figures.plot_stage2_curves(REPORT).axes[0]
    labels = [line.get_label() for line in curves.get_lines() if not line.get_label().startswith("_")]
    # validation against validation: Stage I's validation EER (21.25), not its test EER (19.0)
    assert labels == ["baseline", "Stage I, same validation trials (21.25 %)"]
    (level,) = [line for line in curves.get_lines() if line.get_label().startswith("Stage I")]
    assert list(level.get_ydata()) == [21.25, 21.25]
    # one line per iteration's phase, one iteration boundary, the Stage I level
    assert len(curves.lines) == 4


def test_both_systems_stay_visible_where_lgl_repeats_the_baseline():
    # LGL's phase T repeats the baseline's epochs exactly; then phase L starts from its best epoch.
    t_phase = [{"iteration": 1, "phase": "T", "eer": eer} for eer in (20.0, 18.0, 18.5)]
    report = {
        **REPORT,
        "baseline": {"evaluations": t_phase},
        "lgl": {"evaluations": t_phase + [{"iteration": 1, "phase": "L", "eer": eer} for eer in (17.0, 16.5)]},
    }
    ax = report_figures.plot_stage2_curves(report).axes[0]
    baseline = next(line for line in ax.get_lines() if line.get_label() == "baseline")
    lgl = next(line for line in ax.get_lines() if line.get_label() == "LGL")
    # The baseline wide and underneath, LGL narrow on top: where they coincide both can be seen.
    assert baseline.get_linewidth() >= 3 * lgl.get_linewidth() and baseline.get_zorder() < lgl.get_zorder()
    starts = [text.get_text() for text in ax.texts]
    assert starts == ["phase L starts (it 1)"]
    (start_line,) = [line for line in ax.get_lines() if line.get_linestyle() == "-."]
    assert list(start_line.get_xdata()) == [3.5, 3.5]  # between the last T and the first L evaluation


def test_eer_bars_carry_their_intervals():
    with_ci = {
        **REPORT,
        "stage1": {**REPORT["stage1"], "eer_ci": [17.0, 21.5]},
        "baseline": {**REPORT["baseline"], "eer_ci": [15.0, 20.0]},
        "bootstrap": {"confidence": 0.95},
    }
    ax = report_figures.plot_eer_by_system(with_ci).axes[0]
    assert ax.get_title() == "Test EER by system (95 % CI)"
    (whiskers,) = ax.collections  # one vertical segment per bar with an interval; none for "untrained"
    segments = [segment[:, 1].tolist() for segment in whiskers.get_segments()]
    assert segments == [[17.0, 21.5], [15.0, 20.0]]
    assert report_figures.plot_eer_by_system(REPORT).axes[0].get_title() == "Test EER by system"
