#!/usr/bin/env bash
# The benchmarks on a machine with an NVIDIA GPU, as one command, printing one table at the end:
#
#     benchmarks/gpu.sh [OUT_DIR]          # default gpu_out/; run from anywhere, after `make venv`
#     benchmarks/gpu.sh --smoke [OUT_DIR]  # on any machine: no install, no GPU check, every step with --smoke
#
# 1. installs JAX's CUDA 12 plugin for the JAX version of .venv (`jax[cuda12]==<that version>`); on a machine
#    without network, point WHEELS at a folder of the downloaded wheels (`pip download "jax[cuda12]==X"`);
# 2. checks that JAX sees the GPU (else it stops: the figures would be the CPU's);
# 3. benchmarks/train_step.py at 32x64x64 and 8x256x256, float32 and bfloat16 (PyTorch on this machine's CPU, as the
#    reference the ratio is taken against; XLA's convolution, which 'auto' picks on a GPU);
# 4. benchmarks/inference.py at 64, 256 and 512, batch 1 and 8, the JAX runtime in float32 and in bfloat16;
# 5. scripts/demo.py: a 300-step synth64 training (build of synth64_small, training, evaluation, inference), timed;
#    then the tables of 3 and 4 and the times.
#
# Every step's full output is kept in OUT_DIR (train_step.md, inference_float32.md, inference_bfloat16.md,
# demo.log). Not run yet: no GPU was lent to the project (docs/speed.md, "On NVIDIA GPUs and TPUs").
set -euo pipefail
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="$(mkdir -p "${1:-gpu_out}" && cd "${1:-gpu_out}" && pwd)"
cd "$ROOT"

JAX_VERSION="$("$PY" -c 'import jax; print(jax.__version__)')"
if [ ${#SMOKE[@]} -gt 0 ]; then
  echo "smoke run: no install, no GPU check"
elif [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --no-index --find-links "$WHEELS" "jax[cuda12]==$JAX_VERSION"
else
  "$PY" -m pip install "jax[cuda12]==$JAX_VERSION"
fi
if [ ${#SMOKE[@]} -eq 0 ]; then
  "$PY" -c 'import jax, sys; d = jax.devices(); print("devices:", d); sys.exit(0 if jax.default_backend() == "gpu" else
"error: JAX does not see a GPU after installing jax[cuda12]; expected an NVIDIA GPU and its driver")'
fi

start=$(date +%s)
"$PY" benchmarks/train_step.py --shapes 32x64 8x256 --impls xla --bf16 32x64 8x256 "${SMOKE[@]}" \
  | tee "$OUT/train_step.md"
"$PY" benchmarks/inference.py --sizes 64 256 512 --batches 1 8 "${SMOKE[@]}" | tee "$OUT/inference_float32.md"
"$PY" benchmarks/inference.py --sizes 64 256 512 --batches 1 8 --jax_dtype bfloat16 "${SMOKE[@]}" \
  | tee "$OUT/inference_bfloat16.md"
demo_start=$(date +%s)
"$PY" scripts/demo.py --out "$OUT/demo" "${SMOKE[@]}" 2>&1 | tee "$OUT/demo.log"
end=$(date +%s)

echo
echo "## depthnet-jax on $("$PY" -c 'import jax; print(jax.devices()[0].device_kind)') (jax $JAX_VERSION)"
for part in train_step inference_float32 inference_bfloat16; do
  echo
  echo "### $part"
  grep -E '^\|' "$OUT/$part.md" || true
done
echo
echo "### scripts/demo.py${SMOKE:+ --smoke} (build, train, evaluate, infer): $((end - demo_start)) s; everything: $((end - start)) s"
