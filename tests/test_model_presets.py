"""Paper-scale presets (Table 3) build on the meta device with the paper's parameter counts."""
import pytest

from heptapod.config import resolve
from heptapod.models.summary import parameter_table, spec_for

PAPER_PARAMS_M = {"imagenet-b": 208, "imagenet-l": 478, "imagenet-h": 941}


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_the_paper(params, preset):
    cfg = resolve(params, preset)
    spec = spec_for(cfg, num_classes=1000)
    assert spec.grid_size == 16 and spec.tokens == "continuous" and spec.token_dim == 16
    rows = dict(parameter_table(spec))
    assert rows["total"] == sum(v for k, v in rows.items() if k != "total")
    assert abs(rows["total"] / 1e6 - PAPER_PARAMS_M[preset]) / PAPER_PARAMS_M[preset] < 0.01
    # head = backbone size (same width, depth, heads, MLP ratio)
    assert abs(rows["head"] - rows["backbone"]) / rows["backbone"] < 0.01
