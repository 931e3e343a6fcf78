"""Every output says which machine made it: the same commit on another CPU trains apart."""

import dataclasses

import torch

from heptapod.provenance import provenance
from heptapod.train import train
from heptapod.utils.device import machine, machine_label
from heptapod.utils.io import load_checkpoint


def test_provenance_names_the_cpu_its_vector_capability_and_torch():
    prov = provenance("smoke", "fashion_mnist")
    m = machine(torch.device("cpu"))
    assert m["cpu"] and m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["machine"] == machine_label(m)
    assert f"({m['cpu_capability']}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)" in prov["machine"]
    # a GPU run is labelled by its GPU
    gpu = {"gpu": "NVIDIA H200", "cpu": "x", "cpu_capability": "AVX2", "torch": "2.14.1", "threads": 16}
    assert machine_label(gpu) == "NVIDIA H200, torch 2.14.1, 16 thread(s)"


def test_trained_checkpoint_records_the_machine(tmp_path, smoke_cfg, latent_store):
    cfg = dataclasses.replace(smoke_cfg, train=dataclasses.replace(smoke_cfg.train, steps=2, batch_size=4))
    train(cfg, latent_store, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "model.pt", "generator")
    assert ckpt["machine"] == machine_label(machine(torch.device("cpu")))
