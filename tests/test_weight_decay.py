import pytest
import torch
from torch import nn

from heptapod.models.diffloss import DiffLoss
from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.utils.training import param_groups

HEADS = [("global", 16), ("local", 4), ("1d", 16)]
TOKENS = [dict(tokens="discrete"), dict(tokens="continuous", token_dim=3, diffloss_width=16, diffloss_depth=1)]


def tiny(head: str, window: int, **kw) -> Heptapod:
    torch.manual_seed(0)
    return Heptapod(ModelSpec(vocab_size=16, grid_size=4, num_classes=3, width=16, backbone_depth=1,
                              head_depth=1, num_heads=2, mlp_ratio=2.0, head=head, order="random",
                              window=window, **kw))


def linear_weights_outside_diffloss(model: nn.Module) -> set[str]:
    inside = {f"out.{n}" for n, _ in model.out.named_parameters()} if isinstance(model.out, DiffLoss) else set()
    return {f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and f"{name}.weight" not in inside}


def group_names(model: nn.Module, groups: list[dict]) -> tuple[set[str], set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    decayed = [name_of[id(p)] for p in groups[0]["params"]]
    undecayed = [name_of[id(p)] for p in groups[1]["params"]]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    # every parameter in exactly one group
    assert sorted(decayed + undecayed) == sorted(name_of.values())
    return set(decayed), set(undecayed)


@pytest.mark.parametrize("tokens", TOKENS, ids=lambda t: t["tokens"])
@pytest.mark.parametrize("head,window", HEADS)
def test_only_linear_weights_outside_diffloss_decay(head, window, tokens):
    model = tiny(head, window, **tokens)
    decayed, undecayed = group_names(model, param_groups(model, 0.1))
    assert decayed == linear_weights_outside_diffloss(model)
    assert all(model.get_parameter(n).ndim == 2 for n in decayed)
    # the position tables, tokens and queries, whatever their full names
    expected = {"pos_emb", "class_emb.weight"}
    expected |= {"next_pos_emb"} if head == "1d" else {"head.head_pos"}
    expected |= {"head.mask_token"} if head == "global" else {"head.query"} if head == "local" else set()
    if tokens["tokens"] == "discrete":
        expected.add("tok_emb.weight")
        assert "out.linear.weight" in decayed
    else:
        assert "tok_emb.weight" in decayed  # a linear layer for continuous tokens
        assert {n for n in undecayed if n.startswith("out.")} == {f"out.{n}" for n, _ in model.out.named_parameters()}
    assert expected <= undecayed
    assert all(n.endswith(".bias") or n in expected or ".norm" in n or n.startswith("out.")
               for n in undecayed), undecayed


def test_wrappers_are_unwrapped():
    model = tiny("global", 16)

    class Wrapper(nn.Module):  # the attribute DistributedDataParallel keeps the model under
        def __init__(self, module: nn.Module):
            super().__init__()
            self.module = module

    expected = group_names(model, param_groups(model, 0.1))
    assert group_names(model, param_groups(Wrapper(model), 0.1)) == expected
    assert group_names(model, param_groups(torch.compile(model), 0.1)) == expected


def test_models_without_a_declaration_fall_back_to_ndim():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    decayed, undecayed = group_names(model, param_groups(model, 0.1))
    assert decayed == {"0.weight", "2.weight"}
    assert undecayed == {"0.bias", "1.weight", "1.bias", "2.bias"}
