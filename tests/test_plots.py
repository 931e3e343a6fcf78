"""The report's figures: a family's FID-vs-training plot shows variants, not unrelated runs."""

import json

import pandas as pd

from heptapod.report import plots
from heptapod.report.runs import RunFiles


def _run_files(tmp_path, run: str, offset: float) -> RunFiles:
    progress = tmp_path / f"{run}-progress.json"
    progress.write_text(json.dumps({"progress": [
        {"step": s, "sequences": 64 * s, "fid": 200.0 - s / 10 + offset} for s in (100, 200, 300)]}))
    log = tmp_path / f"{run}-log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"step": 100, "loss": 3.0}, {"step": 100, "val_nll_bits": 3.1 + offset},
        {"step": 300, "val_nll_bits": 2.9 + offset}]))
    return RunFiles(metrics=tmp_path / "m.json", likelihood=tmp_path / "l.json", model=tmp_path / "p.pt",
                    log=log, progress=progress)


def test_seeds_of_a_variant_share_its_colour_and_one_legend_entry(tmp_path, monkeypatch):
    runs = ["2d-random", "n8", "2d-random@1", "n8@1", "2d-random@2"]
    files = {run: _run_files(tmp_path, run, i) for i, run in enumerate(runs)}
    rows = pd.DataFrame({"run": runs, "step_PFLOP": [1e-5] * len(runs)})
    shown = {}
    monkeypatch.setattr(plots, "save", lambda fig, out: shown.setdefault("fig", fig))
    plots.plot_progress(rows, files, "family", "dataset classifier", tmp_path / "out.png")
    axes = shown["fig"].axes
    legend = axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["2d-random", "n8"]
    assert "seeds" in legend.get_title().get_text()
    for ax in axes:
        colors = [line.get_color() for line in ax.get_lines()]
        assert len(colors) == len(runs)
        by_variant = {}
        for run, color in zip(runs, colors):
            by_variant.setdefault(run.partition("@")[0], set()).add(color)
        assert all(len(c) == 1 for c in by_variant.values())
        assert by_variant["2d-random"] != by_variant["n8"]


def test_one_seed_per_variant_needs_no_seed_note(tmp_path, monkeypatch):
    files = {run: _run_files(tmp_path, run, i) for i, run in enumerate(["a", "b"])}
    rows = pd.DataFrame({"run": ["a", "b"], "step_PFLOP": [1e-5, 2e-5]})
    shown = {}
    monkeypatch.setattr(plots, "save", lambda fig, out: shown.setdefault("fig", fig))
    plots.plot_progress(rows, files, "family", "dataset classifier", tmp_path / "out.png")
    legend = shown["fig"].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert legend.get_title().get_text() == ""


def test_the_title_names_the_seed_counts_the_variants_have():
    from heptapod.report.family import seeds_note

    assert seeds_note(pd.Series([3, 3])) == " (3 seeds, mean ± SD over seeds)"
    # Fig. 7 borrows Table 1's 3 seeds for its global window beside 2 and 1 of the local ones
    assert seeds_note(pd.Series([3, 2, 1])) == " (1-3 seeds per variant, mean ± SD over seeds)"
    assert seeds_note(pd.Series([1, 1])) == ""
