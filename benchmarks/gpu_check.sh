#!/usr/bin/env bash
# GPU check for genovae (about 3 minutes on a recent NVIDIA GPU): prints the torch and CUDA versions and the
# device, checks that training copies nothing host -> device per batch, and runs bench_train on CUDA in
# fp32 and bf16 (and bench_scvi on CUDA when scvi-tools is importable), then the atlas workflow (bench_atlas,
# 200,000 cells; ~10 more minutes). Paste the output into BENCHMARKS.md.
#
#   bash benchmarks/gpu_check.sh            # from the repository root or anywhere
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "== genovae GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo n/a)"
"$PY" - <<'EOF'
import sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA (build) {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("no usable CUDA device: nothing to check (train.device: auto would train on the CPU)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
          f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu \
    --format=csv || true

echo
echo "== host -> device copies during training (expected: a few when the split is loaded, none per batch)"
"$PY" - <<'EOF'
import io, sys
sys.path[:0] = ["benchmarks", "workflow/lib"]
import torch
from torch.profiler import ProfilerActivity, profile
from bench_train import make_data
from genovae.train import train_vae

cohort = make_data(4096, 512, 2000, "gaussian")
kw = dict(model_config=dict(hidden=[256, 128], latent_dim=32, likelihood="gaussian"), batch_size=256,
          kl_warmup_epochs=1, patience=100, device="cuda", progress=io.StringIO())
train_vae(cohort, epochs=1, **kw)  # warm-up
counts = {}
for epochs in (2, 4):
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        train_vae(cohort, epochs=epochs, **kw)
    names = [e.name for e in prof.events()]
    counts[epochs] = sum(1 for n in names if "HtoD" in n or "Memcpy HtoD" in n)
batches = 4096 // 256
print(f"HtoD copies: {counts[2]} for 2 epochs, {counts[4]} for 4 epochs ({batches} batches per epoch)")
extra = counts[4] - counts[2]
print("OK: no per-batch host->device copy" if extra < 2 * batches else
      f"WARNING: {extra} more copies for 2 more epochs: about one per batch")
EOF

echo
echo "== bench_train on CUDA (10,000 x 5,000, hidden 256,128, latent 32, batch 256)"
for precision in 32 bf16; do
    echo "-- precision $precision"
    timeout 150 "$PY" benchmarks/bench_train.py --device cuda --precision "$precision" --threads 4 \
        --epochs 5 --repeats 5 --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
keep = ["project_samples_per_s", "reference_samples_per_s", "ratio", "ratio_loop", "n", "genes", "hidden",
        "latent", "batch_size", "epochs", "repeats", "threads", "device", "precision", "deterministic"]
print(json.dumps({k: d[k] for k in keep}))
print("gpu:", d["machine"].get("gpu"), "| cuda:", d["machine"].get("cuda"), "| date:", d["machine"]["date"])'
done

if "$PY" -c "import scvi" 2>/dev/null; then
    echo
    echo "== bench_scvi on CUDA (target: genovae >= 3x scvi-tools)"
    timeout 150 "$PY" benchmarks/bench_scvi.py --device cuda --threads 4 --epochs 10 --repeats 2 --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({k: d[k] for k in d if k not in ("machine", "pairs")}))'
else
    echo
    echo "== bench_scvi skipped: scvi-tools is not importable with $PY (see benchmarks/bench_scvi.py)"
fi
echo
echo "== atlas training on the GPU: bench_atlas.py, 200,000 x 20,000 sparse counts, the whole workflow"
echo "   (set ATLAS_CELLS to change the size; the CPU figure on 2 cores is in BENCHMARKS.md section 7)"
timeout 1500 "$PY" benchmarks/bench_atlas.py --cells "${ATLAS_CELLS:-200000}" --epochs 10 --cores 4 \
    --workdir "${ATLAS_DIR:-/tmp/genovae_atlas_gpu}" --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({"wall_s": d["wall_s"], "training": d["training"], "targets": d["targets"],
                  "rules": {r: [v["s"], v["peak_over_csr"]] for r, v in d["rules"].items()}}))' || \
    echo "bench_atlas did not finish in 25 minutes"
echo
echo "== done"
