"""DDP over 2 gloo processes on CPU gives the single-process gradients and training result."""
import copy
import dataclasses
import json
import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.train import accumulate_gradients, train
from heptapod.utils.io import load_checkpoint

SPEC = ModelSpec(vocab_size=16, grid_size=4, num_classes=3, width=16, backbone_depth=1, head_depth=1,
                 num_heads=2, mlp_ratio=2.0, head="global", order="random", window=4)


def model_and_batch():
    torch.manual_seed(0)
    model = Heptapod(SPEC)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 16, (8, 16), generator=g)
    labels = torch.randint(0, 3, (8,), generator=g)
    order = model.orders(8, g)
    prefix = torch.rand(8, 16, generator=g).argsort(1)[:, :3]
    return model, (tokens, labels, order, prefix)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _worker(rank, world, port, out_dir, cfg, latents):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, batch = model_and_batch()
    accumulate_gradients(DDP(model), batch, None, rank, world, micro_batches=2, device=torch.device("cpu"))
    if rank == 0:
        torch.save(grads(model), out_dir / "ddp_grads.pt")
    train(cfg, latents, out_dir / "ddp_run")  # the whole loop under DDP (joins the same group)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_equals_single_process(tmp_path, smoke_cfg, latent_store):
    cfg = dataclasses.replace(
        smoke_cfg,
        model=dataclasses.replace(smoke_cfg.model, width=16, num_heads=2),
        train=dataclasses.replace(smoke_cfg.train, steps=3, batch_size=8, ckpt_every=3, log_every=1,
                                  supervision_density=2, grad_accum=2),
        workflow=dataclasses.replace(smoke_cfg.workflow, device="cpu"),
    )
    mp.spawn(_worker, args=(2, free_port(), tmp_path, cfg, latent_store), nprocs=2, join=True)

    model, batch = model_and_batch()
    accumulate_gradients(model, batch, None, 0, 1, micro_batches=1, device=torch.device("cpu"))
    single, ddp = grads(model), torch.load(tmp_path / "ddp_grads.pt")
    for name, g in single.items():
        assert torch.allclose(g, ddp[name], atol=1e-6, rtol=1e-4), name

    one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad_accum=1))
    train(one, latent_store, tmp_path / "single_run")
    assert_same_training(tmp_path / "single_run", tmp_path / "ddp_run", steps=3)


def assert_same_training(single_dir, ddp_dir, steps):
    a = load_checkpoint(single_dir / "model.pt", "generator")["state_dict"]
    b = load_checkpoint(ddp_dir / "model.pt", "generator")["state_dict"]
    width = SPEC.width
    for name in a:
        if name.endswith("attn.qkv.bias"):
            # the key bias has an exactly-zero true gradient (softmax is shift-invariant), so
            # Adam turns float noise there into full-size steps that depend on summation order
            a[name], b[name] = a[name][torch.arange(3 * width) // width != 1], b[name][torch.arange(3 * width) // width != 1]
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    log = lambda run: [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert len(log(ddp_dir)) == steps
    assert torch.allclose(torch.tensor(log(single_dir)), torch.tensor(log(ddp_dir)), rtol=1e-5)


def test_train_command_launches_torchrun_for_several_processes(tmp_path, params, latent_store):
    """`heptapod train --nproc 2` (what a multi-GPU train job runs) re-launches itself under
    torchrun and trains the same model as one process."""
    smoke = copy.deepcopy(params)
    smoke["presets"]["smoke"]["model"].update(width=16, num_heads=2)
    smoke["presets"]["smoke"]["train"].update(steps=3, batch_size=8, ckpt_every=3, log_every=1, supervision_density=2)
    smoke["presets"]["smoke"]["workflow"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(smoke))
    for nproc, out in ((1, "single"), (2, "ddp")):
        cmd = [sys.executable, "-m", "heptapod", "train", "--params", str(tmp_path / "params.yaml"),
               "--preset", "smoke", "--variant", "2d-random", "--threads", "1", "--latents", str(latent_store),
               "--out-dir", str(tmp_path / out), "--nproc", str(nproc)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HEPTAPOD_NO_PROGRESS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 processes" in proc.stderr
    assert_same_training(tmp_path / "single", tmp_path / "ddp", steps=3)
