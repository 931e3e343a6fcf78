"""The analyses read the model faithfully: recomputed attention is the attention the model
uses, distances and similarities mean what their names say, no label reaches the states, and
the probe separates what is separable and nothing else."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from heptapod.analysis import stage
from heptapod.analysis.attention import attention_distance
from heptapod.analysis.probe import fit_probe, linear_probe
from heptapod.analysis.similarity import cosine_maps, similarity, states_by_position
from heptapod.analysis.trace import attention_weights, grid_distances, head_attention, label_free_inputs, trace
from heptapod.config import ConfigError
from heptapod.evaluation.likelihood import BY_STEP_KEY, heldout_likelihood
from heptapod.records import SUMMARY_KIND
from heptapod.utils.io import write_json
from conftest import make_latent_store
from test_model import tiny


@pytest.mark.parametrize("causal", [True, False])
def test_recomputed_attention_is_the_models_own(causal):
    m = tiny("global", 16)
    attn = m.backbone.blocks[0].attn
    x = torch.randn(2, 7, 16)
    w = attention_weights(attn, x, causal)
    assert torch.allclose(w.sum(-1), torch.ones(2, 7), atol=1e-6)
    if causal:
        assert torch.all(w.triu(1) == 0)
    # with every head's value the identity, the attention output is the head-mean of the weights
    c = x.shape[-1]
    q, k, v = attn.qkv(x).split(c, dim=-1)
    heads = attn._split(q), attn._split(k)
    per_head = (heads[0] @ heads[1].transpose(-1, -2) / (c // attn.heads) ** 0.5)
    if causal:
        per_head = per_head.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf"))
    y = torch.nn.functional.scaled_dot_product_attention(heads[0], heads[1], attn._split(v), is_causal=causal)
    assert torch.allclose(per_head.softmax(-1) @ attn._split(v), y, atol=1e-5)
    assert torch.allclose(per_head.softmax(-1).mean(1), w, atol=1e-6)


@pytest.mark.parametrize("head", ["global", "1d"])
def test_no_label_reaches_the_states(head):
    m = tiny(head, 16)
    tokens = torch.randint(0, 16, (3, 16))
    order = m.orders(3, torch.Generator().manual_seed(0))
    before = trace(m, tokens, order).states[-1]
    with torch.no_grad():
        m.class_emb.weight[1] += 5.0  # moves the mean: the mean is what step 0 reads
        m.class_emb.weight[2] -= 5.0
    assert torch.allclose(trace(m, tokens, order).states[-1], before, atol=1e-4)  # float32 rounding of the mean
    x = label_free_inputs(m, tokens[torch.arange(3)[:, None], order], order)
    assert torch.allclose(x[:, 0] - (m.next_pos_emb[order[:, 0]] if head == "1d" else 0),
                          m.class_emb.weight.mean(0).expand(3, -1), atol=1e-6)


def test_trace_states_are_the_backbone_output():
    m = tiny("global", 16)
    tokens = torch.randint(0, 16, (2, 16))
    order = m.orders(2, torch.Generator().manual_seed(1))
    tr = trace(m, tokens, order)
    seq = tokens[torch.arange(2)[:, None], order]
    assert torch.allclose(m.backbone.norm(tr.states[-1]), m.backbone(label_free_inputs(m, seq, order)), atol=1e-6)
    assert len(tr.attention) == m.spec.backbone_depth and tr.attention[0].shape == (2, 17, 17)
    heads = head_attention(m, tr, prefix=8)
    assert len(heads) == m.spec.head_depth and heads[0].shape == (2, 17, 17)


def test_grid_distances():
    d = grid_distances(3)
    assert d[0, 1] == 1 and d[0, 4] == pytest.approx(2 ** 0.5) and d[0, 8] == pytest.approx(8 ** 0.5)
    assert torch.all(d.diagonal() == 0) and torch.equal(d, d.T)


def test_uniform_attention_scores_its_own_baseline(tmp_path):
    """Zeroed query/key weights make every causal layer attend uniformly: the measured distance
    is then exactly the uniform baseline."""
    store = make_latent_store(tmp_path / "test.h5", grid=4, vocab=16, classes=3)
    m = tiny("1d", 16)
    with torch.no_grad():
        for block in m.backbone.blocks:
            block.attn.qkv.weight[:32] = 0
            block.attn.qkv.bias[:32] = 0
    out = attention_distance(m, store, images=10, batch_size=4)
    for layer in out["backbone"] + out["head"]:
        assert layer == pytest.approx(out["uniform_causal"], rel=1e-6)
    assert out["uniform_causal"] > 0


def test_similarity_maps(tmp_path):
    store = make_latent_store(tmp_path / "test.h5", grid=4, vocab=16, classes=3)
    m = tiny("global", 16)
    tokens = torch.randint(0, 16, (2, 16))
    order = m.orders(2, torch.Generator().manual_seed(0))
    sim = cosine_maps(states_by_position(m, tokens, order))
    assert torch.allclose(sim.diagonal(dim1=1, dim2=2), torch.ones(2, 16, dtype=torch.float64))
    # the state of a position is the one that consumed its token, whatever the order
    raster = m.orders(2) if m.spec.order == "raster" else torch.arange(16).expand(2, 16)
    tr = trace(m, tokens, raster, attention=False)
    assert torch.allclose(states_by_position(m, tokens, raster), tr.states[-1][:, 1:])
    out = similarity(m, store, images=8, batch_size=4, show=1, queries=[5, 0])
    assert len(out["maps"]) == 1 and len(out["maps"][0]) == 2 and len(out["maps"][0][0]) == 4
    assert out["distances"][0] == 1 and -1 <= out["far"] <= 1 and -1 <= out["near"] <= 1


def test_probe_separates_what_is_separable_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    x = torch.randn(600, 8, generator=g, dtype=torch.float64)
    separable = x + 4.0 * torch.nn.functional.one_hot(y, 8).double()
    good = fit_probe(separable[:400], y[:400], separable[400:], y[400:], 3, steps=50)
    assert good["test_accuracy"] > 0.95
    chance = fit_probe(x[:400], y[:400], x[400:], y[400:], 3, steps=50)
    assert chance["test_accuracy"] < 0.5


def test_linear_probe_end_to_end(tmp_path):
    train = make_latent_store(tmp_path / "train.h5", grid=4, vocab=16, classes=3)
    test = make_latent_store(tmp_path / "test.h5", grid=4, vocab=16, classes=3, seed=1)
    out = linear_probe(tiny("1d", 16), train, test, train_images=40, test_images=None, batch_size=16, steps=5)
    assert out["train_images"] == 40 and out["test_images"] == 96
    assert 0 <= out["mean"]["test_accuracy"] <= 1 and 0 <= out["last"]["test_accuracy"] <= 1


def test_steps_analysis_judges_2d_against_1d_in_each_quarter_of_the_steps(tmp_path, smoke_cfg):
    """`analyze --name steps`: a section, a figure and numbers, from the runs' likelihood files and
    model summaries alone (what a run's record holds); the gap between 2D and 1D runs of the same
    order judged in each quarter of the steps by the seed SD of that quarter; each run's overall
    NLL is its curve's mean, the likelihood stage's number."""
    store = make_latent_store(tmp_path / "test.h5", grid=4, vocab=16, classes=3)

    def seeded(head, seed):
        m = tiny(head)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        return m

    models = {"2d-random": seeded("global", 1), "2d-random@1": seeded("global", 2),
              "1d-random": seeded("1d", 3), "1d-random@1": seeded("1d", 4), "1d-raster": tiny("1d", order="raster")}
    likelihood, summaries = {}, {}
    for run, m in models.items():
        likelihood[run] = tmp_path / f"{run}.likelihood.json"
        write_json(likelihood[run], heldout_likelihood(m, store, images=10, orders=3, batch_size=4))
        summaries[run] = tmp_path / f"{run}.model.json"
        write_json(summaries[run], {"kind": SUMMARY_KIND, "spec": dataclasses.asdict(m.spec)})
    stage.write_steps(smoke_cfg, "smoke", likelihood, summaries, tmp_path / "out")
    result = json.loads((tmp_path / "out/steps.json").read_text())
    assert result["quarter_steps"] == [[1, 4], [5, 8], [9, 12], [13, 16]]
    for run, curve in result["curves"].items():
        assert len(curve) == 16 and result["nll"][run] == pytest.approx(sum(curve) / 16)
        assert sum(result["quarters"][run]) / 4 == pytest.approx(result["nll"][run])
    assert len(result["judged"]) == 4
    for quarter in result["judged"]:
        (v,) = quarter["verdicts"]  # 1d-raster's steps are other contexts: not compared
        assert (v["better"], v["worse"]) == ("2d-random", "1d-random") and quarter["seed_sd"] > 0
        assert quarter["paired_se"] > 0
        assert v["threshold"] == pytest.approx(2 * max(quarter["seed_sd"], quarter["paired_se"]))
        assert v["verdict"] in ("agrees", "disagrees", "within noise")
    for run, path in likelihood.items():
        assert result["nll"][run] == pytest.approx(json.loads(path.read_text())["nll_bits_per_token"], rel=1e-9)
    assert result["images"] == 10 and result["orders"] == 3
    text = (tmp_path / "out/steps.md").read_text()
    assert "| 2d-random | 2 |" in text and "steps 13-16" in text and "![steps](steps.png)" in text
    assert (tmp_path / "out/steps.png").stat().st_size > 1000

    # a run scored before the likelihood stage split its NLL by step: an error naming the file
    old = json.loads(likelihood["1d-raster"].read_text())
    del old[BY_STEP_KEY]
    write_json(likelihood["1d-raster"], old)
    with pytest.raises(ConfigError, match=r"1d-raster.likelihood.json.*again"):
        stage.write_steps(smoke_cfg, "smoke", likelihood, summaries, tmp_path / "out")


def test_nll_by_step_also_covers_the_density_and_window_sweeps():
    """The steps analysis scores Table 1's runs (every seed), Fig. 8's denser-supervision runs and
    Fig. 7's local windows, each once: whether denser supervision or a local window closes the 2D
    head's gap where it lies. The other analyses keep to Table 1's runs; similarity maps to their
    own list."""
    from types import SimpleNamespace

    from heptapod.config import load_params
    from heptapod.workflow import Pipeline

    pipeline = Pipeline(load_params(), None)
    wf = pipeline.config("reference").workflow

    def runs(name):
        return pipeline.analysis_runs(SimpleNamespace(preset="reference", name=name))

    table1, density = wf.family_runs("table1"), wf.family_runs("fig8")
    assert runs("steps")[:len(table1)] == table1
    assert set(runs("steps")) == set(table1) | set(density) | set(wf.family_runs("fig7"))
    assert {"n2", "n4", "n8", "w16-n4", "w4-n16"} <= set(runs("steps"))
    assert len(set(runs("steps"))) == len(runs("steps"))
    assert runs("attention") == runs("probe") == table1
    assert runs("similarity") == pipeline.config("reference").analysis.similarity_runs
