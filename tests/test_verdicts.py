"""The decision rule and the noise it is judged against."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from heptapod.evaluation.stage import balanced_draw
from heptapod.verdicts import Noise, combine, compare, pooled_sd, seed_noise


def test_pooled_sd_weights_groups_by_degrees_of_freedom():
    assert pooled_sd([np.array([1.0, 3.0]), np.array([5.0])]) == pytest.approx(math.sqrt(2.0))
    a, b = np.array([1.0, 3.0]), np.array([0.0, 2.0, 4.0])
    assert pooled_sd([a, b]) == pytest.approx(math.sqrt((2.0 + 8.0) / 3))
    assert pooled_sd([np.array([1.0]), np.array([2.0])]) is None


def test_seed_noise_pools_over_variants():
    rows = pd.DataFrame({"variant": ["a", "a", "b", "b", "c"], "fid": [10.0, 12.0, 20.0, 20.0, 99.0]})
    assert seed_noise(rows, ("fid", "nll")) == {"fid": pytest.approx(1.0), "nll": None}


@pytest.mark.parametrize("better,worse,metric,expected", [
    (10.0, 15.0, "fid", "agrees"),       # lower FID for the variant the paper ranks first
    (15.0, 10.0, "fid", "disagrees"),
    (10.0, 11.0, "fid", "within noise"),  # |diff| 1 <= threshold 2
    (50.0, 40.0, "is", "agrees"),        # higher IS is better
    (2.0, 2.5, "nll", "within noise"),
])
def test_compare(better, worse, metric, expected):
    assert compare(better, worse, metric, threshold=2.0 if metric != "nll" else 1.0) == expected


def test_unmeasured_noise_decides_nothing():
    assert compare(1.0, 100.0, "fid", None) == "within noise"
    assert compare(float("nan"), 1.0, "fid", 0.1) == "within noise"


def test_threshold_is_twice_the_larger_noise():
    assert Noise(1.5, 0.5).threshold() == 3.0
    assert Noise(None, 0.5).threshold() == 1.0
    assert Noise(0.1, None).threshold(extra_sd=0.4) == pytest.approx(0.8)
    assert Noise(None, None).threshold() is None


def test_combine():
    assert combine(["agrees", "agrees"]) == "agrees"
    assert combine(["agrees", "within noise"]) == "within noise"
    assert combine(["agrees", "disagrees"]) == "disagrees"
    assert combine([]) == "within noise"


def test_floor_draws_are_class_balanced_like_the_samples():
    labels = np.repeat(np.arange(4), 10)
    idx = balanced_draw(labels, 10, 4, np.random.default_rng(0))
    assert len(set(idx)) == 10
    assert sorted(np.bincount(labels[idx], minlength=4)) == [2, 2, 3, 3]  # as balanced_labels(10, 4)
    with pytest.raises(ValueError, match="class"):
        balanced_draw(labels, 60, 4, np.random.default_rng(0))


def test_last_quarter_change_says_whether_a_run_still_moves():
    from heptapod.report.runs import last_quarter_change

    val = [{"step": s, "val_nll_bits": v} for s, v in ((25, 4.0), (50, 3.5), (75, 3.2), (100, 3.0))]
    assert last_quarter_change(val, 100) == pytest.approx(0.2 / 3.0)
    assert math.isnan(last_quarter_change(val[:3], 100))  # no end point: unknown
    flat = [{"step": 75, "val_diffusion_loss": 1.0}, {"step": 100, "val_diffusion_loss": 0.999}]
    assert abs(last_quarter_change(flat, 100)) < 0.01


def test_stability_report_says_which_verdicts_hold(tmp_path):
    import json

    from heptapod.stability import stability_report

    def family(fid_verdict, fid, commit):
        return {"verdict": {"fid": fid_verdict, "nll": "agrees"}, "provenance": {"commit": commit},
                "noise": {"fid": {"seed_sd": 0.5}, "nll": {"seed_sd": None}},
                "variants": {"a": {"fid": fid, "nll": 2.0}, "b": {"fid": 50.0, "nll": None}}}

    for name, verdict, fid, commit in (("first", "agrees", 40.0, "c1"), ("second", "within noise", 41.5, "c2")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "table1.json").write_text(json.dumps(family(verdict, fid, commit)))
    (tmp_path / "first" / "runs.csv").write_text("run,commit,machine\na,e1,Xeon (AVX512)\nb,e0,unknown\n")
    out = tmp_path / "stability.md"
    res = stability_report(tmp_path / "first", tmp_path / "second", ["table1"], out, tmp_path / "stability.json")
    assert res == {"held": 1, "verdicts": 2}
    text = out.read_text()
    assert "**1 of 2 verdicts hold.**" in text and "| table1 | fid | agrees | within noise | **no** |" in text
    # a's FID moved 1.5 = 3 seed SDs of the first report; b did not move; NLL has no seed SD
    assert "| table1 | a | 40 | 41.5 | 3 | 2 | 2 | – |" in text and "| table1 | b | 50 | 50 | 0 | – | – | – |" in text
    assert "Median move over the variants: FID 1.50 seed SDs (2 variants), NLL –." in text
    assert "- first run (`first`): report written at `c1`, runs evaluated at `e0`, `e1`, trained on Xeon (AVX512)\n" in text
    # another machine: the same table, and which commits each report comes from
    stability_report(tmp_path / "first", tmp_path / "second", ["table1"], out, tmp_path / "m.json", "machine")
    text = out.read_text()
    assert "Does another machine reproduce the report?" in text and "| first machine | second machine |" in text
    assert "- first machine (`first`): report written at `c1`, runs evaluated at `e0`, `e1`, trained on Xeon (AVX512)\n" in text
    assert "- second machine (`second`): report written at `c2`\n" in text  # no runs.csv: no run commits to name
    # a page that names its own runs' commits and machines is read before the report's runs.csv,
    # which may be older than a family rerun on its own
    page = family("within noise", 41.5, "c2") | {"runs": {"a": {"commit": "e2", "machine": "EPYC (AVX512)"}}}
    (tmp_path / "second" / "table1.json").write_text(json.dumps(page))
    (tmp_path / "second" / "runs.csv").write_text("run,commit,machine\na,old,Xeon (AVX512)\n")
    stability_report(tmp_path / "first", tmp_path / "second", ["table1"], out, tmp_path / "m.json", "machine")
    assert "- second machine (`second`): report written at `c2`, runs evaluated at `e2`, trained on EPYC (AVX512)\n" \
        in out.read_text()
    # the same comparison between two data sets' reports, worded as such, without moves (other scales)
    res = stability_report(tmp_path / "first", tmp_path / "second", ["table1"], out, tmp_path / "d.json", "dataset")
    text = out.read_text()
    assert "**1 of 2 verdicts are the same on both.**" in text and "| family | comparison | first | second |" in text
    assert "seed SDs" not in text and "| table1 | a | 40 | 41.5 | 2 | 2 |" in text
    assert "report written" not in text  # two studies, not two runs of one: no provenance to line up
    # a rerun whose FIDs come from a retrained classifier: each run's move split in two
    split = {"a": ({"fid": 40.0}, {"fid": 41.5}, {"fid": 40.5}), "a@1": ({"fid": 44.0}, {"fid": 43.0}, {"fid": 46.0})}
    stability_report(tmp_path / "first", tmp_path / "second", ["table1"], out, tmp_path / "e.json", "rerun", split)
    text = out.read_text()
    assert "| a | 40 | 41.5 | 40.5 | +0.5 | +1 |" in text and "| a@1 | 44 | 43 | 46 | +2 | -3 |" in text
    # medians of |moves|: generator side (0.5, 2) -> 1.25, extractor (1, 3) -> 2
    assert "generator side 1.25, extractor 2 (the first report's FID seed SD: 0.5)." in text
    assert json.loads((tmp_path / "e.json").read_text())["extractor_split"]["median_abs"] == {
        "by_extractor": 2.0, "by_generator": 1.25}


def test_stability_compares_the_families_asked_for_and_names_an_unknown_one(tmp_path, capsys):
    import json

    from heptapod.cli import main

    for name, verdict in (("first", "agrees"), ("second", "disagrees")):
        (tmp_path / name).mkdir()
        page = {"verdict": {"fid": verdict}, "provenance": {"commit": name}, "noise": {},
                "variants": {"a": {"fid": 40.0, "nll": None}}}
        (tmp_path / name / "table1.json").write_text(json.dumps(page))  # no other family's page
    args = ["stability", "--preset", "reference", "--kind", "machine", "--first", str(tmp_path / "first"),
            "--second", str(tmp_path / "second"), "--out", str(tmp_path / "machine.md")]
    assert main([*args, "--families", "table1"]) == 0
    result = json.loads((tmp_path / "machine.json").read_text())
    assert set(result["families"]) == {"table1"} and result["held"] == 0
    assert main([*args, "--families", "table9"]) == 2
    assert "--families: preset 'reference' has no family table9" in capsys.readouterr().err


def test_margin_trend_says_whether_a_gap_closes_over_the_last_quarter():
    from heptapod.report.runs import last_quarter_row
    from heptapod.report.statements import margin_trend_line

    def line(variant, start, end, seeds=3):
        val = [{"step": 75, "val_nll_bits": start}, {"step": 100, "val_nll_bits": end}]
        return {"variant": variant, "seeds": seeds, **last_quarter_row(val, 100)}

    # the paper's better variant 'a' is behind 'b' by 0.3, then by 0.1: the gap closes
    agg = pd.DataFrame([line("a", 3.3, 3.0), line("b", 3.0, 2.9)])
    text = margin_trend_line(agg, [("a", "b")], move_sd=0.01)
    assert "behind by 0.3 at step 75, behind by 0.1 at the end (narrowing, change +0.2" in text
    assert "within 2 SE" in margin_trend_line(agg, [("a", "b")], move_sd=1.0)  # too noisy to tell
    assert "seed noise unmeasured" in margin_trend_line(agg, [("a", "b")], move_sd=None)
    crossed = pd.DataFrame([line("a", 3.1, 2.8), line("b", 3.0, 2.9)])
    assert "(crossed" in margin_trend_line(crossed, [("a", "b")], move_sd=0.01)
    widening = pd.DataFrame([line("a", 2.9, 2.5), line("b", 3.0, 2.9)])
    assert "ahead by 0.1 at step 75, ahead by 0.4 at the end (widening" in margin_trend_line(
        widening, [("a", "b")], move_sd=0.01)
    # curves on different scores (NLL vs diffusion loss) are not compared
    kl = {"variant": "c", "seeds": 1, **last_quarter_row(
        [{"step": 75, "val_diffusion_loss": 0.5}, {"step": 100, "val_diffusion_loss": 0.4}], 100)}
    assert margin_trend_line(pd.DataFrame([line("a", 3.3, 3.0), kl]), [("a", "c")], move_sd=0.01) is None


def test_density_statement_judges_the_densest_2d_run_against_the_1d_model():
    from heptapod.report.runs import last_quarter_row
    from heptapod.report.statements import density_statement

    def line(variant, n, fid, nll, pflop, seeds=1):
        val = [{"step": 75, "val_nll_bits": nll + 0.1}, {"step": 100, "val_nll_bits": nll}]
        return {"variant": variant, "n": n, "fid": fid, "nll": nll, "nll_se": 0.001, "seeds": seeds,
                "train_PFLOP": pflop, **last_quarter_row(val, 100)}

    agg = pd.DataFrame([line("2d", 1, 95.0, 2.9, 1.0), line("2d-n4", 4, 89.0, 2.74, 2.5)])
    one_d = pd.DataFrame([line("1d-random", 1, 94.0, 2.73, 1.0, seeds=3)])
    noise = {"fid": Noise(2.0, 0.1), "nll": Noise(0.01, None), "val_move": Noise(0.005, None)}
    text, verdict = density_statement(agg, noise, one_d)
    assert verdict == {"fid": "agrees", "nll": "agrees", "fid_vs_1d-random": "agrees",
                       "nll_vs_1d-random": "within noise"}  # FID gap 5 > 4; NLL gap 0.01 < 0.02
    assert "2d-n4 spent 2.5x its training compute" in text and "3 seeds" in text
    assert density_statement(agg, noise)[1] == {"fid": "agrees", "nll": "agrees"}  # no 1D runs


def test_nll_verdicts_pair_the_runs_image_by_image():
    """Images differ far more in difficulty than two runs do: paired over images, a consistent
    gap is real; from the two runs' own standard errors alone it would be within noise."""
    from heptapod.report.statements import judge
    from heptapod.verdicts import paired_se

    hardness = np.random.default_rng(0).normal(2.8, 0.8, 400)  # per-image NLL spread like the reference's
    jitter = np.random.default_rng(1).normal(0.0, 0.02, (3, 400))

    def run(variant, seed, gap, paired=True):
        per_image = hardness + gap + jitter[seed]
        return {"variant": variant, "nll": per_image.mean(), "nll_se": per_image.std(ddof=1) / 20,
                "nll_per_image": per_image if paired else None}

    assert paired_se(hardness, hardness + 0.05) == pytest.approx(0.0, abs=1e-12)
    assert paired_se(hardness, hardness[:10]) is None and paired_se(hardness, None) is None
    noise = {"nll": Noise(0.005, None)}
    for paired, expected in ((True, "agrees"), (False, "within noise")):
        rows = pd.DataFrame([run("a", 0, 0.0, paired), run("a", 1, 0.0, paired), run("b", 2, 0.05, paired)])
        agg = rows.groupby("variant", sort=False).agg(nll=("nll", "mean"), nll_se=("nll_se", "mean")).reset_index()
        agg["nll_per_image"] = [aggregate_per_image(rows, v) for v in agg["variant"]]
        verdict, text = judge(agg, "a", "b", "nll", noise)
        assert verdict == expected, text
        assert ("paired SE over images" in text) == paired  # the report says which SE it used


def aggregate_per_image(rows: pd.DataFrame, variant: str):
    from heptapod.report.runs import seed_mean_per_image
    return seed_mean_per_image(rows.loc[rows["variant"] == variant, "nll_per_image"])


def test_a_doubled_run_has_stopped_moving_only_within_the_threshold():
    """The doubling test: a run trained twice as long 'improved' when its score gained more than
    the decision rule's threshold, and 'stopped moving' when it gained less."""
    from heptapod.convergence import judge_runs

    hardness = np.random.default_rng(0).normal(2.8, 0.8, 400)
    jitter = np.random.default_rng(1).normal(0.0, 0.01, 400)

    def run(steps, gain, fid):
        per_image = hardness - gain + jitter * (steps // 6000)
        return pd.Series({"run": "2d-random", "steps": steps, "fid": fid, "nll": per_image.mean(),
                          "nll_se": per_image.std(ddof=1) / 20, "nll_per_image": per_image})

    noise = {"nll": Noise(0.008, None), "fid": Noise(2.0, 0.1)}  # thresholds 0.016 and 4.0
    moved = judge_runs(run(6000, 0.0, 90.0), run(12000, 0.05, 88.0), noise)
    assert moved["nll"]["moved"] == "improved" and moved["nll"]["gain"] == pytest.approx(0.05, abs=2e-3)
    assert moved["fid"]["moved"] == "stopped moving" and moved["fid"]["gain"] == pytest.approx(2.0)
    assert "paired SE over images" in moved["nll"]["account"]
    still = judge_runs(run(6000, 0.0, 90.0), run(12000, 0.01, 95.0), noise)
    assert still["nll"]["moved"] == "stopped moving" and still["fid"]["moved"] == "got worse"
    assert still["fid"]["relative_gain"] == pytest.approx(-5 / 90)


def test_fig6_early_verdict_averages_every_seeds_first_snapshot(tmp_path):
    """The first-snapshot comparison uses each token type's seeds, not only its first seed."""
    import json

    from heptapod.report.statements import tokens_statement

    def progress(run, first_fid):
        path = tmp_path / f"{run}.json"
        path.write_text(json.dumps({"progress": [{"step": 750, "fid": first_fid}, {"step": 1500, "fid": 150.0}]}))
        return path

    files = {"vq": progress("vq", 200.0), "vq@1": progress("vq@1", 212.0),
             "kl": progress("kl", 209.0), "kl@1": progress("kl@1", 211.0)}
    agg = pd.DataFrame([{"variant": "vq", "tokens": "discrete", "fid": 94.0, "seeds": 2},
                        {"variant": "kl", "tokens": "continuous", "fid": 78.0, "seeds": 2}])
    noise = {"fid": Noise(1.0, 0.1), "nll": Noise(0.01, None)}
    floor = {"by_count": {"500": {"fid_sd": 1.5}}}
    text, verdict = tokens_statement(agg, files, floor, noise, 500)
    # seed 0 alone: 200 vs 209 would agree; the means are 206 vs 210, and the first snapshot's
    # own seed SD (pooled: sqrt((72 + 2) / 2) = 6.1) makes the threshold 12.17, not 3
    assert "mean over 2 and 2 seeds" in text and "vq 206 vs kl 210" in text
    assert verdict == {"fid_early": "within noise", "fid_end": "agrees"}
    assert "threshold 12.17 from the first snapshot's seed SD" in text
    one_seed = {"vq": files["vq"], "kl": files["kl"]}  # no replicates: the end's seed SD (1.0), floor 1.5
    text, verdict = tokens_statement(agg, one_seed, floor, noise, 500)
    assert verdict["fid_early"] == "agrees" and "threshold 3 from the end's seed SD" in text
    assert "step 750, one seed each" in text


def test_a_longer_budget_whose_seeds_spread_more_raises_the_threshold():
    """The doubling chain judges every link by its first preset's noise, unless a longer budget
    trained seed replicates of its own that spread more: then theirs sets the threshold (seed
    spread may grow with training, and a threshold must not understate it). One seed per
    variant measures nothing and changes nothing. Along a chain, the link before's noise carries
    over: a link whose presets train one seed keeps the spread an earlier budget measured."""
    from heptapod.convergence import SCORES, chain_noise, seed_spread

    def rows(steps, nll_by_variant):
        return pd.DataFrame([{"variant": v, "steps": steps, "nll": x, "fid": 100.0 + 10 * x}
                             for v, xs in nll_by_variant.items() for x in xs])

    first = rows(6000, {"a": [2.70, 2.72, 2.74], "b": [2.88, 2.90, 2.92], "c": [2.2, 2.2, 2.2]})
    wider = rows(12000, {"a": [2.60, 2.66], "b": [2.80, 2.86]})  # pooled SD 0.0424 > 0.02
    narrower = rows(12000, {"a": [2.600, 2.601], "b": [2.800, 2.801]})
    single = rows(24000, {"a": [2.5], "b": [2.7]})
    label = dict(SCORES)["nll"]
    base = {"nll": Noise(0.02, None), "fid": Noise(0.2, 1.5)}

    spread = seed_spread({"ref": first, "2x": wider, "4x": single}, ["a", "b"])
    assert list(spread["preset"]) == ["ref", "2x", "4x"] and list(spread["seeds per variant"]) == ["3", "2", "1"]
    assert spread[f"{label} seed SD"].iloc[0] == pytest.approx(0.02)  # c, not chained, is left out
    assert spread[f"{label} seed SD"].iloc[1] == pytest.approx(0.06 / np.sqrt(2))
    assert math.isnan(spread[f"{label} seed SD"].iloc[2])
    noise = chain_noise(base, spread)
    assert noise["nll"].seed_sd == pytest.approx(0.06 / np.sqrt(2)) and noise["nll"].floor_sd is None
    assert noise["fid"].seed_sd == pytest.approx(0.6 / np.sqrt(2)) and noise["fid"].floor_sd == 1.5

    assert chain_noise(base, seed_spread({"ref": first, "2x": narrower}, ["a", "b"])) == base
    assert chain_noise(base, seed_spread({"ref": first, "4x": single}, ["a", "b"])) == base
    # the next link (one seed at 4x and 8x) keeps the wider spread that the link before measured
    earlier = {m: {"seed_sd": n.seed_sd, "floor_sd": n.floor_sd} for m, n in noise.items()}
    assert chain_noise(base, seed_spread({"ref": first, "4x": single}, ["a", "b"]), earlier) == noise
    assert chain_noise(noise, seed_spread({"ref": first}, ["a", "b"]),
                       {m: {"seed_sd": None, "floor_sd": None} for m in earlier}) == noise


def test_a_doubling_link_reads_the_link_before_or_names_the_file(tmp_path):
    """The next link reads the presets and noise of the link before's report; a file without
    them (another report, an older layout) is one error naming it, not a KeyError."""
    from heptapod.convergence import read_earlier_link

    good = tmp_path / "convergence.json"
    noise = {"nll": {"seed_sd": 0.009, "floor_sd": None}, "fid": {"seed_sd": 1.7, "floor_sd": 0.1}}
    good.write_text(json.dumps({"shorter": "ref", "longer": "2x", "noise": noise}))
    assert read_earlier_link(good)["noise"] == noise
    for broken in ({"shorter": "ref", "longer": "2x"}, {"noise": noise}, [1, 2],
                   {"shorter": "ref", "longer": "2x", "noise": {"nll": noise["nll"]}}):
        good.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="convergence.json: not a doubling test's report"):
            read_earlier_link(good)


def test_the_doubling_test_sets_each_budgets_nll_by_step_side_by_side():
    """Each link of the doubling chain shows where the longer training moved the runs: per
    quarter of the generation steps, each chained variant's mean over its seeds at every budget
    and the 2D-vs-1D margin with the verdict of that budget's own rule. Variants the chain does
    not train (1D-raster, scored at the first budget) are left out."""
    from heptapod.convergence import steps_section

    def steps_json(quarters, judged):
        return {"quarter_steps": [[1, 16], [17, 32], [33, 48], [49, 64]], "quarters": quarters,
                "judged": [{"verdicts": [{"better": "2d", "worse": "1d", "values": v, "threshold": 0.01,
                                          "verdict": verdict}]} for v, verdict in judged]}

    first = steps_json({"1d": [3.5, 2.8, 2.5, 2.3], "1d@1": [3.5, 2.6, 2.5, 2.3], "2d": [3.4, 2.8, 2.7, 2.6],
                        "1d-raster": [2.0, 2.6, 2.7, 1.8]},
                       [([3.4, 3.5], "agrees"), ([2.8, 2.7], "disagrees"), ([2.7, 2.5], "disagrees"),
                        ([2.6, 2.3], "disagrees")])
    longer = steps_json({"1d": [3.4, 2.6, 2.4, 2.2], "2d": [3.3, 2.6, 2.45, 2.3]},
                        [([3.3, 3.4], "agrees"), ([2.6, 2.6], "within noise"), ([2.45, 2.4], "disagrees"),
                         ([2.3, 2.2], "disagrees")])
    lines, data = steps_section({"a (6 steps)": first, "b (12 steps)": longer}, ["1d", "2d"])
    rows = data["quarters"]
    assert [r["steps"] for r in rows] == ["1-16", "17-32", "33-48", "49-64"]
    assert rows[1]["1d, a (6 steps)"] == pytest.approx(2.7)  # mean over its two seeds
    assert rows[1]["1d, b (12 steps)"] == pytest.approx(2.6)
    assert not any("1d-raster" in key for row in rows for key in row)
    assert rows[0]["2d - 1d, a (6 steps)"].startswith("-0.100 (2D ahead")
    assert rows[1]["2d - 1d, b (12 steps)"].startswith("+0.000 (within noise")
    assert rows[3]["2d - 1d, b (12 steps)"].startswith("+0.100 (2D behind")
    margins = data["margins"]["2d - 1d"]
    assert [m["margin"] for m in margins["a (6 steps)"]] == pytest.approx([-0.1, 0.1, 0.2, 0.3])
    assert [m["verdict"] for m in margins["b (12 steps)"]] == ["agrees", "within noise", "disagrees", "disagrees"]
    text = "\n".join(lines)
    assert "## Held-out NLL by generation step at each budget" in text and "| 17-32 | 2.7 |" in text


def test_denser_supervision_is_judged_against_the_chain_at_about_its_compute():
    """Each link of the doubling chain sets the first budget's density-sweep runs (n > 1) beside
    the chained runs at every budget, by training compute: each dense run (mean over its seeds)
    is judged against each chained variant at the budget closest to it in compute (log scale),
    paired image by image, and the figure gets each variant's NLL against compute."""
    from heptapod.convergence import compute_section

    hardness = np.random.default_rng(0).normal(2.8, 0.8, 400)

    def row(run, head, steps, flops_per_step, nll, fid):
        per_image = hardness - hardness.mean() + nll + np.random.default_rng([steps, *map(ord, run)]).normal(0, 0.01, 400)
        return {"run": run, "variant": run.split("@")[0], "head": head, "order": "random", "tokens": "discrete",
                "depth": "4/4", "backbone_depth": 4, "head_depth": 4, "window": 1 if head == "1d" else 64,
                "params_M": 0.5, "steps": steps, "train_PFLOP": flops_per_step * steps, "fid": fid, "is": 5.0,
                "kid": 20.0, "precision": 0.6, "recall": 0.3, "nll": per_image.mean(), "dloss": float("nan"), "nll_se": per_image.std(ddof=1) / 20,
                "nll_order_sd": 0.1, "nll_per_image": per_image, "val_key": "val_nll_bits", "val_3q_step": 3 * steps // 4,
                "val_3q": nll + 0.02, "val_end": nll, "val_change_last_quarter": 0.01}

    first = pd.DataFrame([row("1d", "1d", 6000, 1e-5, 2.70, 110.0), row("1d@1", "1d", 6000, 1e-5, 2.72, 111.0),
                          row("2d", "global", 6000, 0.97e-5, 2.88, 111.0)])
    longer = pd.DataFrame([row("1d", "1d", 24000, 1e-5, 2.50, 100.0), row("2d", "global", 24000, 0.97e-5, 2.51, 99.0)])
    dense = pd.DataFrame([row("n8", "global", 6000, 4.5e-5, 2.73, 105.0), row("n8@1", "global", 6000, 4.5e-5, 2.71, 106.0),
                          row("n2", "global", 6000, 1.5e-5, 2.80, 110.5)])
    noise = {"nll": Noise(0.005, None), "fid": Noise(2.0, 0.1)}  # thresholds 0.01 (or the paired SE) and 4.0
    lines, data, curves = compute_section({"ref (6000 steps)": first, "ref-4x (24000 steps)": longer}, dense,
                                          {"1d": 1, "2d": 1, "n2": 2, "n8": 8}, noise)
    judged = {(j["dense"], j["versus"]): j for j in data["judged"]}
    # n8 (0.27 PFLOP) is closest to the 24000-step runs (0.24); n2 (0.09) to the 6000-step ones (0.06)
    assert set(judged) == {("n8, 6000 steps", "1d, 24000 steps"), ("n8, 6000 steps", "2d, 24000 steps"),
                           ("n2, 6000 steps", "1d, 6000 steps"), ("n2, 6000 steps", "2d, 6000 steps")}
    assert judged[("n8, 6000 steps", "1d, 24000 steps")]["compute_ratio"] == pytest.approx(0.24 / 0.27)
    assert judged[("n8, 6000 steps", "1d, 24000 steps")]["nll"] == "disagrees"  # 2.72 vs 2.50: more steps ahead
    assert judged[("n8, 6000 steps", "2d, 24000 steps")]["fid"] == "disagrees"  # 105.5 vs 99: beyond 4.0
    assert judged[("n2, 6000 steps", "2d, 6000 steps")]["nll"] == "agrees"  # 2.80 vs 2.88
    assert judged[("n2, 6000 steps", "1d, 6000 steps")]["fid"] == "within noise"  # 110.5 vs 110.5
    text = "\n".join(lines)
    assert "## Denser supervision or longer training, at equal compute" in text
    assert "**1d, 24000 steps ahead**" in text and "**n2, 6000 steps ahead**" in text
    assert "paired SE over images" in text and "| n8, 6000 steps | n = 8 | 2 |" in text
    assert "| 1d, 6000 steps | 1D head, every step | 2 |" in text
    points = {p["run"]: p for p in data["points"]}
    assert points["n8, 6000 steps"]["held-out NLL (bits/token)"] == pytest.approx(
        (dense["nll"].iloc[0] + dense["nll"].iloc[1]) / 2)
    lines_by_label = {label: (x, y) for label, x, y in curves}
    assert lines_by_label["1d, longer training"][0] == pytest.approx([0.06, 0.24])
    # the dense line starts at the same head supervised once per sequence: 2d at the first budget
    assert lines_by_label["denser supervision, n = 1, 2, 8 at 6000 steps"][0] == pytest.approx([0.0582, 0.09, 0.27])
