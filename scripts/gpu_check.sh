#!/usr/bin/env bash
# The GPU path on one GPU, in one run of ~9 minutes:
#   1. the environment: GPU, driver, torch, and that the package imports;
#   2. a short real run through Snakemake (preset gpu-check: the gpu preset's model, Table 1's
#      1D-raster and 2D-random on Fashion-MNIST, GPU pool HEPTAPOD_GPUS=0): data, classifier,
#      tokenizer, latents, training, sampling, FID with the dataset classifier;
#   3. sampling time of the trained 2D-random model against batch size (scripts/sample_timing.py);
#   4. the same training under torchrun (DDP, NCCL, one process) for a few steps;
#   5. `heptapod bench-scale` for imagenet-b and imagenet-l (synthetic latents of the published
#      tokenizer's shape): training images/s up the batch ladder BATCHES to the largest batch that
#      fits in bf16, MFU, peak memory; sampling images/s at N = 256 with the KV cache, k = 1 and 4;
#   6. torch.compile against eager for imagenet-b's training step (COMPILE_BATCH=0: skipped).
# The steps come in order of importance. Each has its own time limit inside BUDGET_S (default 540 s)
# and writes what it measured before the next starts, so a step cut short costs only itself. A later
# run can take only what an earlier one left: RUN_S (the Snakemake run's limit, default 300 s),
# SAMPLE_S (step 3's, 90 s), DDP=0 (no torchrun step), BATCHES="" (sampling only, no training
# ladder), SCALE_S (each bench-scale's limit, 90 s).
#
#   bash scripts/gpu_check.sh [OUT_DIR]      (default results/bench/gpu-check)
# Offline machines without the project's Python packages: WHEELS=dir installs dir/*.whl into
# /tmp/site first (the machine's own torch is used; scripts/gpu_wheels.sh collects them). Fashion-MNIST is read from
# /usr/share/datasets/fashion-mnist, or copied there from FASHION_MNIST=dir. A dry run of the
# script itself on a CPU: SCALE_PRESETS=smoke CHECK_PRESET=smoke BATCHES="4 8" COMPILE_BATCH=4.
set -u
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-results/bench/gpu-check}")
mkdir -p "$out"
deadline=$((SECONDS + ${BUDGET_S:-540}))
log="$out/check.log"
exec > >(tee -a "$log") 2>&1

step() {  # step NAME SECONDS CMD...: run CMD with at most SECONDS (and what is left of the budget)
    local name=$1 limit=$2; shift 2
    local left=$((deadline - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then echo "== $name: skipped, budget spent"; return; fi
    echo "== $name (limit ${limit} s) $(date -u +%T)"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@"
    echo "== $name: exit $? after $((SECONDS - t0)) s"
}

if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HEPTAPOD_NO_PROGRESS=1
# the rules call `python`; some images only have python3
if ! command -v python >/dev/null; then
    mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python && export PATH="/tmp/pybin:$PATH"
fi
if [ -n "${FASHION_MNIST:-}" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r "$FASHION_MNIST" /usr/share/datasets/fashion-mnist
fi

{ nvidia-smi; python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"; python -m pip list 2>/dev/null; } > "$out/env.txt" 2>&1
step import 30 python -c "import heptapod.cli, torch_fidelity, snakemake, h5py; print('imports ok')"

scale=${SCALE_PRESETS:-imagenet-b imagenet-l} check=${CHECK_PRESET:-gpu-check} batches=${BATCHES-32 64 128 256 512}
cb=${COMPILE_BATCH:-128} first=${scale%% *}

export HEPTAPOD_GPUS=0
targets="results/evaluate/$check/1d-raster/metrics.json results/evaluate/$check/2d-random/metrics.json"
step "snakemake $check" "${RUN_S:-300}" python -m snakemake --cores 16 --resources gpu=1 --scheduler greedy $targets \
    --config preset="$check"
# sampling time against batch and k, with torch.profiler's busiest operators (per-step overhead shows
# as a time that barely grows with the batch; results/bench/README.md, "Sampling")
step "sampling time $check" "${SAMPLE_S:-90}" python scripts/sample_timing.py \
    "results/train/$check/2d-random/model.pt" --batches 100 500 1000 --positions 1 4 --profile
ddp=$(mktemp -d)
((${DDP:-1})) && step "torchrun (DDP, 1 process)" 30 python -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m heptapod train --preset "$check" --variant 2d-random --max-steps 50 \
    --latents "results/latents/$check/vq/train.h5" --val-latents "results/latents/$check/vq/test.h5" \
    --out-dir "$ddp"
unset HEPTAPOD_GPUS

for m in $scale; do
    step "bench-scale $m" "${SCALE_S:-90}" python -m heptapod bench-scale --preset "$m" --batches $batches \
        --steps 5 --positions 4 1 --sample-batch 256 --out "$out/gpu-$m.json"
done
if ((cb > 0)); then
    step "torch.compile $first" 90 python -m heptapod bench-scale --preset "$first" --batches $cb \
        --steps 5 --positions --compile-batch $cb --out "$out/gpu-compile-$first.json"
fi

# what the real run wrote: logs, scores, sample grids (small files only)
tar czf "$out/gpu-check-run.tar.gz" --ignore-failed-read results/logs \
    $(find results -path "*/$check/*" \( -name '*.json' -o -name '*.jsonl' -o -name '*.png' \) 2>/dev/null) \
    $(find "$ddp" -name '*.jsonl' 2>/dev/null) 2>/dev/null
echo "== done after $SECONDS s"
