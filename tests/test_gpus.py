"""The GPU pool hands each concurrent job its own id (fake ids, no GPU needed)."""
import json
import multiprocessing as mp
import time

from heptapod.utils.gpus import gpu_slot


def _job(lock_dir, devices, out, k):
    import os

    with gpu_slot(devices, lock_dir, poll_s=0.02) as dev:
        t0 = time.monotonic()
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(0.3)
        t1 = time.monotonic()
    with open(out / f"{k}.json", "w") as f:
        json.dump({"dev": dev, "visible": visible, "t0": t0, "t1": t1}, f)


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    devices = ["fake0", "fake1"]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_job, args=(tmp_path / "locks", devices, tmp_path, k)) for k in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    runs = [json.loads((tmp_path / f"{k}.json").read_text()) for k in range(5)]
    assert all(r["dev"] == r["visible"] and r["dev"] in devices for r in runs)
    for dev in devices:  # intervals on one device never overlap
        spans = sorted((r["t0"], r["t1"]) for r in runs if r["dev"] == dev)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert {r["dev"] for r in runs} == set(devices)  # both devices were used


def test_lock_is_released_after_the_job(tmp_path):
    with gpu_slot(["0"], tmp_path, timeout_s=1) as dev:
        assert dev == "0"
    with gpu_slot(["0"], tmp_path, timeout_s=1) as dev:
        assert dev == "0"


def test_a_multi_gpu_job_takes_all_its_devices_or_waits(tmp_path):
    with gpu_slot(["0", "1", "2"], tmp_path, timeout_s=1, count=2) as visible:
        assert visible == "0,1"
        with gpu_slot(["0", "1", "2"], tmp_path, timeout_s=1) as one:
            assert one == "2"  # the device the 2-GPU job left free
        try:  # two devices are not free: wait (here: time out) without holding device 2
            with gpu_slot(["0", "1", "2"], tmp_path, poll_s=0.05, timeout_s=0.2, count=2):
                raise AssertionError("got devices that are taken")
        except TimeoutError:
            pass
        with gpu_slot(["0", "1", "2"], tmp_path, timeout_s=1) as one:
            assert one == "2"
