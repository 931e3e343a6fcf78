import copy
import dataclasses

import pytest
import yaml

from heptapod.cli import main
from heptapod.config import ConfigError, longer_chain, longer_links, resolve, validate_params

from conftest import ROOT


def test_every_preset_and_variant_resolves(params):
    for preset in ["default", *params["presets"]]:
        for variant in params["variants"]:
            cfg = resolve(params, preset, variant)
            assert cfg.model.head in ("global", "local", "1d")
        assert resolve(params, preset).workflow.runs()


def test_seeded_runs_shift_the_seeds(params):
    base, other = resolve(params, "smoke", "1d-raster"), resolve(params, "smoke", "1d-raster@1")
    assert other.train.seed == base.train.seed + 1 and other.sample.seed == base.sample.seed + 1
    assert other.model == base.model
    with pytest.raises(ConfigError, match="seed number"):
        resolve(params, "smoke", "1d-raster@x")


def test_table1_runs_are_read_beside_families_that_need_them(params):
    wf = resolve(params, "reference").workflow
    table1 = wf.family_runs("table1")
    # Table 4 has seed replicates of its own: it is judged by them alone
    assert wf.noise_runs("table4") == [] and wf.noise_runs("table1") == []
    # Fig. 8 has them too, but sets its densest run against Table 1's 1D-random seeds
    assert "n8@1" in wf.family_runs("fig8") and wf.noise_runs("fig8") == table1
    # the default's families have no replicates: Table 1's seeds judge them all
    default = resolve(params, "default").workflow
    assert default.noise_runs("table4") == default.family_runs("table1") == default.noise_runs("fig8")


def test_shared_runs_are_listed_once(params):
    runs = resolve(params, "default").workflow.runs()
    assert len(runs) == len(set(runs)) and runs.count("2d-random") == 1
    assert {"2d-random@1", "1d-raster@1", "w4-n32", "n8", "depth-7-1"} <= set(runs)


def test_unknown_key_is_named(params):
    bad = copy.deepcopy(params)
    bad["presets"]["smoke"]["train"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"presets\.smoke\.train\.lrr"):
        validate_params(bad)


def test_unknown_section_is_named(params):
    bad = copy.deepcopy(params)
    bad["defaults"]["trian"] = {}
    with pytest.raises(ConfigError, match=r"defaults\.trian"):
        validate_params(bad)


def test_mistyped_value_is_named(params):
    bad = copy.deepcopy(params)
    bad["defaults"]["train"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"defaults\.train\.steps"):
        validate_params(bad)


def test_missing_key_in_defaults_is_named(params):
    bad = copy.deepcopy(params)
    del bad["defaults"]["model"]["width"]
    with pytest.raises(ConfigError, match="width"):
        validate_params(bad)


def test_unknown_preset_and_variant(params):
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        resolve(params, "nope")
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        resolve(params, "smoke", "nope")


def test_similarity_runs_must_be_runs_the_preset_trains(params):
    # every shipped preset's analysis looks only at runs its study trains
    for preset in ["default", *params["presets"]]:
        cfg = resolve(params, preset)
        if cfg.workflow.family_runs("table1"):
            assert set(cfg.analysis.similarity_runs) <= set(cfg.workflow.runs()), preset
    stray = copy.deepcopy(params)
    stray["presets"]["smoke"]["analysis"]["similarity_runs"] = ["2d-random", "1d-random"]
    with pytest.raises(ConfigError, match="preset 'smoke': analysis.similarity_runs names 1d-random, which"):
        resolve(stray, "smoke")


def test_training_settings_of_a_pinned_file_are_named_not_ignored(params):
    pinned = copy.deepcopy(params)
    pinned["presets"]["reference"]["classifier"] = {"steps": 2000}
    with pytest.raises(ConfigError, match=r"preset 'reference': classifier.steps would not be used: "
                                          r"classifier.checkpoint gives the trained file, used as is"):
        resolve(pinned, "reference")
    pinned["presets"]["reference"]["classifier"] = {"steps": 2000, "checkpoint": None}  # trains: used
    assert resolve(pinned, "reference").classifier.steps == 2000
    pinned["presets"]["reference"]["tokenizer"] = {"lr": 0.01, "commitment": 0.5}
    with pytest.raises(ConfigError, match="tokenizer.lr, tokenizer.commitment would not be used"):
        resolve(pinned, "reference")
    pinned["presets"]["reference"]["tokenizer"]["kl_checkpoint"] = None  # the KL tokenizer trains
    assert resolve(pinned, "reference").tokenizer.lr == 0.01


def test_longer_presets_chain_to_their_first_and_a_loop_is_named(params):
    assert longer_chain(params, "reference-4x") == ["reference-4x", "reference-2x", "reference"]
    assert longer_links(params, "reference") == ["reference-2x", "reference-4x", "reference-8x"]
    assert longer_links(params, "reference-4x") == ["reference-8x"] and longer_links(params, "default") == []
    looped = copy.deepcopy(params)
    looped["presets"]["reference"].setdefault("workflow", {})["longer_of"] = "reference-4x"
    with pytest.raises(ConfigError, match="loops: reference-4x -> reference-2x -> reference -> reference-4x"):
        longer_chain(looped, "reference-4x")


def test_variant_overrides_preset(params):
    assert resolve(params, "smoke", "2d-raster").model.order == "raster"
    assert resolve(params, "smoke", "2d-raster").model.width == params["presets"]["smoke"]["model"]["width"]


def test_cli_reports_bad_key_in_one_line(tmp_path, params, capsys):
    bad = copy.deepcopy(params)
    bad["defaults"]["sample"]["temprature"] = 1.0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["params", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defaults.sample.temprature" in err[0]


def test_schema_file_is_generated_from_config():
    assert main(["schema", "--check", "--path", str(ROOT / "workflow/schemas/params.schema.yaml"),
                 "--params", str(ROOT / "params.yaml")]) == 0


def test_command_line_strings_are_typed_by_the_schema(params):
    from heptapod.config import coerce_strings, validate_params

    override = {"preset": "smoke", "defaults": {"train": {"steps": "7", "lr": "0.001", "compile": "true"},
                                                "model": {"order": "raster"},
                                                "evaluate": {"nll_images": "null"}}}
    typed = coerce_strings(override)
    assert typed["defaults"]["train"] == {"steps": 7, "lr": 0.001, "compile": True}
    assert typed["defaults"]["model"]["order"] == "raster" and typed["defaults"]["evaluate"]["nll_images"] is None
    assert coerce_strings({"defaults": {"train": {"steps": "7.5"}}})["defaults"]["train"]["steps"] == "7.5"
    with pytest.raises(ConfigError, match="steps"):
        validate_params({**params, "defaults": {**params["defaults"], "train": {**params["defaults"]["train"], "steps": "7.5"}}})


def test_path_patterns_fill_and_keep_wildcards():
    from heptapod import paths

    assert str(paths.model.of("default", "n2")) == "results/train/default/n2/model.pt"
    assert paths.family_report.partial(ext="md") == "results/report/{preset}/{family}.md"
    assert paths.latents_part.wildcards == ["preset", "kind", "split", "shard", "shards"]
    with pytest.raises(TypeError, match="variant"):
        paths.model.of("default")


def test_misspelled_component_names_the_key_and_the_allowed_values(params):
    bad = copy.deepcopy(params)
    bad["variants"]["2d-random"] = {"model": {"head": "globl"}}
    with pytest.raises(ConfigError, match=r"variants.2d-random.model.head: 'globl' is not one of \['global', 'local', '1d'\]"):
        validate_params(bad)


def test_every_registered_component_meets_its_contract():
    from heptapod import registry

    for kind, (table, protocol) in registry.CONTRACTS.items():
        members = [m for m in vars(protocol) if not m.startswith("_")]
        assert members, kind
        for name in table:
            cls = registry.load(table, name)
            assert all(callable(getattr(cls, m, None)) for m in members), (kind, name)
    with pytest.raises(ValueError, match="known: global, local, 1d"):
        registry.load(registry.HEADS, "globl")


def test_fixed_files_ship_and_only_fashion_mnist_presets_use_them(params):
    """The embedded default scores FID with the classifier file in the repo and models the codes of
    the tokenizer files in the repo (the same on every machine); a preset on other data, or with
    other tokenizer settings, or the tests' smoke preset, trains its own."""
    from heptapod.tokenizers.vq import TokenizerSpec
    from heptapod.utils.io import load_checkpoint

    for preset in params["presets"]:
        cfg = resolve(params, preset)
        if cfg.classifier.checkpoint:
            assert cfg.data.dataset == "fashion_mnist", preset
            meta = load_checkpoint(ROOT / cfg.classifier.checkpoint, "classifier")["meta"]
            assert (meta["dataset"], meta["channels"], meta["num_classes"]) == ("fashion_mnist", cfg.data.channels, 10)
        for kind in ("vq", "kl"):
            path = getattr(cfg.tokenizer, f"{kind}_checkpoint")
            if not path or not path.startswith("workflow/assets/"):
                continue  # not set, or a released checkpoint the user provides
            ckpt = load_checkpoint(ROOT / path, "tokenizer")
            assert ckpt["dataset"] == cfg.data.dataset == "fashion_mnist", (preset, kind)
            spec = dataclasses.asdict(TokenizerSpec.from_config(cfg.tokenizer, cfg.data.channels, kind))
            assert ckpt["spec"] == spec, (preset, kind)
    default = resolve(params, "default")
    assert default.classifier.checkpoint and default.tokenizer.vq_checkpoint and default.tokenizer.kl_checkpoint
    for preset in ("mnist", "smoke", "gpu", "gpu-check"):
        cfg = resolve(params, preset)
        assert cfg.tokenizer.vq_checkpoint is None and cfg.tokenizer.kl_checkpoint is None, preset
    assert resolve(params, "mnist").classifier.checkpoint is None and resolve(params, "smoke").classifier.checkpoint is None