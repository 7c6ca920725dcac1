#!/usr/bin/env bash
# The benchmarks on a machine with an NVIDIA GPU, as one command, printing one table at the end:
#
#     benchmarks/gpu.sh [OUT_DIR]          # default gpu_out/; run from anywhere, after `make venv`
#
# 1. installs JAX's CUDA 12 plugin for the JAX version of .venv (`jax[cuda12]==<that version>`); on a machine
#    without network, point WHEELS at a folder of the downloaded wheels (`pip download "jax[cuda12]==X"`);
# 2. checks that JAX sees the GPU (else it stops: the figures would be the CPU's);
# 3. benchmarks/train_step.py at 32x64x64 and 8x256x256, float32 and bfloat16 (PyTorch on this machine's CPU, as the
#    reference the ratio is taken against; XLA's convolution, which 'auto' picks on a GPU);
# 4. benchmarks/inference.py at 64, 256 and 512, batch 1 and 8, the JAX runtime in float32 and in bfloat16;
# 5. scripts/demo.py: a 300-step synth64 training (build of synth64_small, training, evaluation, inference), timed.
#
# Every step's full output is kept in OUT_DIR (train_step.md, inference_float32.md, inference_bfloat16.md,
# demo.log). Not run yet: no GPU was lent to the project (docs/speed.md, "On NVIDIA GPUs and TPUs").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="$(mkdir -p "${1:-gpu_out}" && cd "${1:-gpu_out}" && pwd)"
cd "$ROOT"

JAX_VERSION="$("$PY" -c 'import jax; print(jax.__version__)')"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --no-index --find-links "$WHEELS" "jax[cuda12]==$JAX_VERSION"
else
  "$PY" -m pip install "jax[cuda12]==$JAX_VERSION"
fi
"$PY" -c 'import jax, sys; d = jax.devices(); print("devices:", d); sys.exit(0 if jax.default_backend() == "gpu" else
"error: JAX does not see a GPU after installing jax[cuda12]; expected an NVIDIA GPU and its driver")'

start=$(date +%s)
"$PY" benchmarks/train_step.py --shapes 32x64 8x256 --impls xla --bf16 32x64 8x256 | tee "$OUT/train_step.md"
"$PY" benchmarks/inference.py --sizes 64 256 512 --batches 1 8 | tee "$OUT/inference_float32.md"
"$PY" benchmarks/inference.py --sizes 64 256 512 --batches 1 8 --jax_dtype bfloat16 | tee "$OUT/inference_bfloat16.md"
demo_start=$(date +%s)
"$PY" scripts/demo.py --out "$OUT/demo" 2>&1 | tee "$OUT/demo.log"
end=$(date +%s)

echo
echo "## depthnet-jax on $("$PY" -c 'import jax; print(jax.devices()[0].device_kind)') (jax $JAX_VERSION)"
echo
echo "| benchmark | result |"
echo "|---|---|"
grep -E '^\| [0-9]+x[0-9]+x[0-9]+ \|' "$OUT/train_step.md" | sed 's/^/| train step: /; s/ |$//' | cut -c1-200 \
  | sed 's/$/ |/' || true
for dtype in float32 bfloat16; do
  grep -E '^\| [0-9]+x[0-9]+ \| [0-9]+ \|' "$OUT/inference_$dtype.md" | sed "s/^/| inference ($dtype): /" || true
done
echo "| 300-step synth64 demo (build, train, evaluate, infer) | $((end - demo_start)) s |"
echo "| everything above | $((end - start)) s |"
