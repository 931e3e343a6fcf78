"""The analysis stages: each writes ``<name>.md`` (section), ``.json`` (numbers, provenance)
and ``.png`` (figure) for the runs it is given.

Where the paper implies a direction (the 2D objective gives a more global, more linearly
separable representation than next-token prediction) the 2D runs are judged against the 1D
runs by the report's decision rule: a difference counts when it exceeds twice the pooled seed
SD (and, for the probe, twice the binomial standard error of a test accuracy).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from heptapod import verdicts  # noqa: E402
from heptapod.analysis.attention import attention_distance  # noqa: E402
from heptapod.analysis.probe import linear_probe  # noqa: E402
from heptapod.analysis.similarity import similarity  # noqa: E402
from heptapod.analysis.summary import by_variant, judge_pairs, verdict_lines  # noqa: E402
from heptapod.config import Config, ConfigError, split_run  # noqa: E402
from heptapod.data.images import load_images  # noqa: E402
from heptapod.evaluation.likelihood import BY_STEP_KEY, DISCRETE_KEY, QUARTERS_KEY  # noqa: E402
from heptapod.provenance import provenance  # noqa: E402
from heptapod.records import model_summary  # noqa: E402
from heptapod.report.plots import save  # noqa: E402
from heptapod.report.tables import fmt, pm  # noqa: E402
from heptapod.train import load_generator  # noqa: E402
from heptapod.utils.io import read_json, write_json, write_text  # noqa: E402
from heptapod.utils.training import progress  # noqa: E402


def _models(cfg: Config, models: dict[str, Path]):
    """Each run's sampling weights, with a progress bar over the runs."""
    with progress(len(models), desc="runs", unit="run") as bar:
        for run, path in models.items():
            yield run, load_generator(path, cfg.sample.use_ema)
            bar.update()


def _pairs(heads: dict[str, str]) -> list[tuple[str, str]]:
    """(2D variant, 1D variant) pairs: the direction the paper implies."""
    two = [v for v, h in heads.items() if h != "1d"]
    return [(a, b) for a in two for b in heads if heads[b] == "1d"]


def _pm(s: dict) -> str:
    """A variant's mean ± SD over seeds (the mean alone for one seed)."""
    return pm(s["mean"], float("nan") if s["sd"] is None else s["sd"])


def _write(out_dir: Path, name: str, text: str, result: dict, cfg: Config, preset: str) -> dict:
    write_text(out_dir / f"{name}.md", text + f"\n![{name}]({name}.png)\n")
    write_json(out_dir / f"{name}.json", {**result, "rule": verdicts.RULE_TEXT,
                                          "provenance": provenance(preset, cfg.data.dataset)})
    return {name: str(out_dir / f"{name}.md")}


def write_attention(cfg: Config, preset: str, models: dict[str, Path], latents: dict[str, Path],
                    out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    a = cfg.analysis
    runs, heads = {}, {}
    for run, model in _models(cfg, models):
        runs[run] = attention_distance(model, latents[run], a.images, a.batch_size)
        heads[split_run(run)[0]] = model.spec.head
    ratio = {r: float(np.mean(x["backbone"]) / x["uniform_causal"]) for r, x in runs.items()}
    seed_sd, judged = judge_pairs(ratio, _pairs(heads), "attention_distance")
    summary = by_variant(ratio)
    lines = ["## Attention distance", "",
             f"Mean attended distance in grid cells per layer ({a.images} held-out images; attention "
             "renormalised over the image's tokens, the class step left out), against uniform attention "
             "over the same keys. Judged on the backbone's mean distance / uniform (orders differ in what "
             "a causal layer can see, so the ratio compares across them); paper direction: the 2D "
             "objective attends more globally.", "",
             *verdict_lines(judged, "backbone distance / uniform"), "",
             "| variant | seeds | backbone layers (cells) | head layers (cells) | uniform (causal) | "
             "backbone / uniform |", "|---|---|---|---|---|---|"]
    for v, s in summary.items():
        mine = [x for r, x in runs.items() if split_run(r)[0] == v]
        layer = lambda part: ", ".join(f"{np.mean([m[part][i] for m in mine]):.2f}"  # noqa: E731
                                       for i in range(len(mine[0][part]))) or "–"
        lines.append(f"| {v} | {s['seeds']} | {layer('backbone')} | {layer('head')} | "
                     f"{np.mean([m['uniform_causal'] for m in mine]):.2f} | {_pm(s)} |")
    fig, ax = plt.subplots(figsize=(7, 4))
    for v in summary:
        mine = [x for r, x in runs.items() if split_run(r)[0] == v]
        ys = np.mean([m["backbone"] + m["head"] for m in mine], axis=0)
        line, = ax.plot(range(1, len(ys) + 1), ys, marker="o", label=v)
        depth, causal = len(mine[0]["backbone"]), np.mean([m["uniform_causal"] for m in mine])
        # uniform attention: over the causal keys, and over every slot in a bidirectional head
        head_uniform = causal if mine[0]["head_kind"] == "1d" else mine[0]["uniform_head"]
        ax.hlines(causal, 0.5, depth + 0.5, ls="--", lw=0.8, color=line.get_color())
        ax.hlines(head_uniform, depth + 0.5, len(ys) + 0.5, ls=":", lw=0.8, color=line.get_color())
        ax.axvline(depth + 0.5, color="grey", lw=0.5)
    ax.set_xlabel("layer (backbone, then head; grey line: where the head starts)")
    ax.set_ylabel("mean attended distance (grid cells)")
    ax.set_title("Attention distance (dashed/dotted: uniform attention over the same keys)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, out_dir / "attention.png")
    return _write(out_dir, "attention", "\n".join(lines) + "\n", {
        "runs": runs, "ratio": ratio, "variants": summary, "seed_sd": seed_sd, "verdicts": judged}, cfg, preset)


def write_similarity(cfg: Config, preset: str, models: dict[str, Path], latents: dict[str, Path],
                     images: str | Path, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    a = cfg.analysis
    g = cfg.data.image_size // cfg.tokenizer.downsample
    queries = [(g // 2) * g + g // 2, g + 1]  # the centre, and near a corner
    runs, specs = {}, {}
    for run, model in _models(cfg, models):
        runs[run] = similarity(model, latents[run], a.images, a.batch_size, a.show_images, queries)
        specs[run] = model.spec
    shown, _, _ = load_images(images, limit=a.show_images)
    rows = [(i, q) for i in range(a.show_images) for q in range(len(queries))]
    fig = plt.figure(figsize=(2.2 * (len(runs) + 1), 2.2 * len(rows) + 3))
    grid = fig.add_gridspec(len(rows) + 1, len(runs) + 1, height_ratios=[1] * len(rows) + [1.4])
    cell = cfg.data.image_size / g
    for r, (i, q) in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(shown[i].transpose(1, 2, 0).squeeze(), cmap="gray")
        ax.add_patch(plt.Rectangle(((queries[q] % g) * cell - 0.5, (queries[q] // g) * cell - 0.5), cell, cell,
                                   fill=False, color="red", lw=1.5))
        ax.axis("off")
        for c, (run, res) in enumerate(runs.items()):
            ax = fig.add_subplot(grid[r, c + 1])
            ax.imshow(np.array(res["maps"][i][q]), vmin=-1, vmax=1, cmap="RdBu_r")
            ax.axis("off")
            if r == 0:
                ax.set_title(run, fontsize=9)
    ax = fig.add_subplot(grid[len(rows), :])
    for run, res in runs.items():
        ax.plot(res["distances"], res["by_distance"], marker="o", label=run)
    ax.set_xlabel("grid distance (cells)")
    ax.set_ylabel("mean cosine similarity")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, out_dir / "similarity.png")
    lines = ["## Token similarity maps (paper Fig. 3)", "",
             f"Cosine similarity between the backbone state (layer backbone_depth, label-free) of a query "
             f"position (red box) and every position of the same image; red: alike. Mean similarity by "
             f"distance over {a.images} held-out images and every query position below (one seed per run: "
             "descriptive, no verdict).", "",
             "| run | head | tokens | similarity at 1 cell | at >= half the grid | far / near |",
             "|---|---|---|---|---|---|"]
    for run, res in runs.items():
        lines.append(f"| {run} | {specs[run].head} | {specs[run].tokens} | {res['near']:.3f} | {res['far']:.3f} | "
                     f"{res['far'] / res['near']:.3f} |")
    return _write(out_dir, "similarity", "\n".join(lines) + "\n",
                  {"runs": {r: {k: v for k, v in x.items() if k != "maps"} for r, x in runs.items()}},
                  cfg, preset)


def write_probe(cfg: Config, preset: str, models: dict[str, Path], train_latents: str | Path,
                latents: dict[str, Path], out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    a = cfg.analysis
    runs, heads = {}, {}
    for run, model in _models(cfg, models):
        runs[run] = linear_probe(model, train_latents, latents[run], a.probe_train_images,
                                 a.probe_test_images, a.batch_size, a.probe_steps)
        heads[split_run(run)[0]] = model.spec.head
    lines = ["## Linear probe", "",
             f"Logistic regression on frozen backbone states (layer backbone_depth, label-free), fit on "
             f"{next(iter(runs.values()))['train_images']} train-split images, scored on "
             f"{next(iter(runs.values()))['test_images']} test images; paper direction: the 2D objective "
             "gives the more linearly separable representation.", ""]
    result, fig_data = {"runs": runs}, {}
    for feat, name in (("mean", "mean-pooled states"), ("last", "last state")):
        acc = {r: x[feat]["test_accuracy"] for r, x in runs.items()}
        se = max(x[feat]["test_accuracy_se"] for x in runs.values())
        seed_sd, judged = judge_pairs(acc, _pairs(heads), "probe_accuracy", se)
        result[feat] = {"variants": by_variant(acc), "seed_sd": seed_sd, "accuracy_se": se, "verdicts": judged}
        fig_data[feat] = result[feat]["variants"]
        lines += [f"**{name}** (seed SD {fmt(seed_sd)}, test-accuracy SE {se:.3g}):",
                  *verdict_lines(judged, "test accuracy"), ""]
    lines += ["| variant | seeds | mean-pooled | last state |", "|---|---|---|---|"]
    for v, s in fig_data["mean"].items():
        lines.append(f"| {v} | {s['seeds']} | {_pm(s)} | {_pm(fig_data['last'][v])} |")
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(fig_data["mean"])
    x = np.arange(len(names))
    for k, feat in enumerate(("mean", "last")):
        s = fig_data[feat]
        ax.bar(x + (k - 0.5) * 0.38, [s[v]["mean"] for v in names], 0.38, label=feat,
               yerr=[s[v]["sd"] or 0 for v in names], capsize=3)
    ax.set_xticks(x, names)
    ax.set_ylabel("test accuracy of the linear probe")
    ax.set_title("Linear probe on frozen backbone states (bars: SD over seeds)")
    ax.legend(title="features")
    ax.grid(alpha=0.3, axis="y")
    save(fig, out_dir / "probe.png")
    return _write(out_dir, "probe", "\n".join(lines) + "\n", result, cfg, preset)


def _scored_by_step(likelihood: dict[str, Path], models: dict[str, Path]) -> dict[str, dict]:
    """Each discrete run's held-out NLL by generation step, from its likelihood file (continuous
    runs have no likelihood to split and are left out), with its head and order from its model
    (checkpoint or record summary); every run must be scored on the same images."""
    scored = {}
    for run, path in likelihood.items():
        lk = read_json(path)
        if DISCRETE_KEY not in lk:
            continue
        if BY_STEP_KEY not in lk or QUARTERS_KEY not in lk:
            raise ConfigError(f"{path}: scored without the NLL by generation step ('{BY_STEP_KEY}'); "
                              f"score the run's likelihood again (snakemake -R likelihood ...)")
        spec = model_summary(models[run])["spec"]
        scored[run] = {"curve": np.asarray(lk[BY_STEP_KEY]), "by_image": np.asarray(lk[QUARTERS_KEY]),
                       "head": spec["head"], "order": spec["order"], "images": lk["heldout_images"],
                       "orders": lk["heldout_orders"]}
    if not scored:
        raise ValueError("analyze --name steps: no run with discrete tokens to score")
    if len(images := {x["images"] for x in scored.values()}) > 1:
        raise ConfigError(f"analyze --name steps: the runs' likelihoods were scored on {sorted(images)} "
                          f"held-out images; a paired comparison needs the same images")
    return scored


def write_steps(cfg: Config, preset: str, likelihood: dict[str, Path], models: dict[str, Path],
                out_dir: str | Path) -> dict:
    """Held-out NLL by generation step: where in the generation a run's likelihood is won or lost.
    Read from the likelihood stage's scores (its images and orders), so the curve's mean is each
    run's held-out NLL, and a run's record serves as well as its checkpoint; two runs with the same
    overall NLL gap can differ wholly in where it sits."""
    out_dir = Path(out_dir)
    scored = _scored_by_step(likelihood, models)
    curves = {r: x["curve"] for r, x in scored.items()}
    by_image = {r: x["by_image"] for r, x in scored.items()}
    heads = {split_run(r)[0]: x["head"] for r, x in scored.items()}
    orders = {split_run(r)[0]: x["order"] for r, x in scored.items()}
    images, k_orders = next(iter(scored.values()))["images"], max(x["orders"] for x in scored.values())
    # a step means the same context (and, in raster order, the same position) only within one order
    same_order = [(two, one) for two, one in _pairs(heads) if orders[two] == orders[one]]

    def seed_mean(per_run: dict[str, np.ndarray], variant: str) -> np.ndarray:
        return np.mean([x for r, x in per_run.items() if split_run(r)[0] == variant], axis=0)

    image_means = {v: seed_mean(by_image, v) for v in heads}
    n = len(next(iter(curves.values())))
    bounds = [(int(part[0]) + 1, int(part[-1]) + 1) for part in np.array_split(np.arange(n), 4)]
    quarters = {run: [float(x) for x in q.mean(axis=0)] for run, q in by_image.items()}  # = the curve's quarters
    judged, lines = [], []
    for i, (lo, hi) in enumerate(bounds):
        # the rule for NLL: 2 x max(seed SD, SE of the difference paired image by image)
        paired = max([verdicts.paired_se(image_means[two][:, i], image_means[one][:, i]) or 0.0
                      for two, one in same_order], default=0.0)
        seed_sd, pairs = judge_pairs({r: q[i] for r, q in quarters.items()}, same_order, "nll", paired or None)
        judged.append({"steps": [lo, hi], "seed_sd": seed_sd, "paired_se": paired or None, "verdicts": pairs})
        lines += verdict_lines(pairs, f"steps {lo}-{hi}")
    whole = {r: float(c.mean()) for r, c in curves.items()}
    variants = by_variant(whole)
    by_quarter = [by_variant({r: q[i] for r, q in quarters.items()}) for i in range(4)]
    text = ["## Held-out NLL by generation step (beyond the paper)", "",
            f"Bits per token of each generation step (step t predicts one token from the class and the "
            f"t - 1 tokens before it), on the first {images} held-out images, {k_orders} orders "
            "each for random-order runs (the likelihood stage's images and orders; the mean over steps is "
            "the run's held-out NLL). Where a 2D head's overall gap to a 1D model sits: early steps "
            "predict with little context, late ones fill in a nearly finished grid. Each quarter of the "
            "steps judged 2D vs 1D of the same order (only there does a step mean the same context) by "
            "the decision rule: 2 x max(pooled seed SD of that quarter's mean, SE of the difference "
            "paired image by image). The paper states no direction by step, so 'agrees' means only that "
            "the 2D run is ahead there.", "", *lines, "",
            "| variant | seeds | " + " | ".join(f"steps {lo}-{hi}" for lo, hi in bounds) + " | all steps |",
            "|---|---|" + "---|" * 5]
    for v, s_ in variants.items():
        text.append(f"| {v} | {s_['seeds']} | " + " | ".join(_pm(q[v]) for q in by_quarter) + f" | {_pm(s_)} |")
    mean_curve = {v: seed_mean(curves, v) for v in variants}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    steps = np.arange(1, n + 1)
    color = {v: f"C{i}" for i, v in enumerate(mean_curve)}  # a 2D run's gap in its own curve's colour
    for v, c in mean_curve.items():
        left.plot(steps, c, label=v, color=color[v])
    for better, worse in same_order:
        if better in mean_curve and worse in mean_curve:
            right.plot(steps, mean_curve[better] - mean_curve[worse], label=f"{better} - {worse}", color=color[better])
    right.axhline(0, color="grey", lw=0.8)
    for ax, title in ((left, "held-out NLL at each step (mean over seeds)"),
                      (right, "2D minus 1D, same order (below 0: the 2D run is ahead)")):
        ax.set_xlabel("generation step (tokens known + 1)")
        ax.set_ylabel("bits")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, out_dir / "steps.png")
    return _write(out_dir, "steps", "\n".join(text) + "\n", {
        "curves": {r: [float(x) for x in c] for r, c in curves.items()}, "quarters": quarters,
        "quarter_steps": bounds, "nll": whole, "variants": variants, "judged": judged,
        "images": images, "orders": k_orders}, cfg, preset)
