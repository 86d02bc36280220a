#!/usr/bin/env bash
# The CUDA path on a GPU machine, in one go (about 8 minutes on one H100/H200):
#   1. the CUDA tests (tests/test_accelerator.py: CUDA against the CPU path, same recipe);
#   2. bench/train_speed.py on the GPU: a sandwich step against its four subnets alone;
#   3. a short `edgenas run` on full Fashion-MNIST with --torch-device cuda: the latency table
#      (the machine's CPU, ~3 min), the supernet (2 epochs), the search (20 trials) and
#      finalize (distill, prune, QAT, export, measure).
# With CUDA_REFERENCES=1 the MobileNetV3 references of bench/references.py (15 epochs, 2 seeds)
# are trained beside them, one process per layout (how bench/results/references/ was made:
# ~4 min per reference on an H200 with 8 processes sharing it).
# With CUDA_CONTROLS=1 bench/teacher_controls.py runs beside them, one process per teacher setting and
# seed (labels only, the largest subnet, the references' ensemble of configs/fashion-mnist-teachers.yaml,
# whose ONNX files must be under runs/bench_references/: carry that folder), each cut at the limit.
# Files come back as OUT_DIR/cuda.tar.gz (logs, manifests, cards, JSON; no weights) and the
# references' seed-0 ONNX files (each under 16 MiB; time them on the target CPU with
# `python bench/references.py` afterwards).
#
#   bash bench/cuda.sh OUT_DIR [FASHION_MNIST_DIR]
set -u
out=${1:?usage: bash bench/cuda.sh OUT_DIR [FASHION_MNIST_DIR]}
root=${2:-/usr/share/datasets/fashion-mnist}
limit=${CUDA_CHECK_SECONDS:-450}  # every part is cut at this many seconds, so that the files come back
export PYTHONUNBUFFERED=1
work=runs/cuda
mkdir -p "$out" "$work/logs"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(), os.cpu_count(), 'cores')"
} > "$work/logs/gpu.txt" 2>&1
start=$(date +%s)
elapsed() { echo "$1: exit $2 at $(($(date +%s) - start)) s" >> "$work/logs/gpu.txt"; }

# the headline config with the data's folder; a short copy of it for the pipeline
sed "s#data: {name: fashion-mnist,#data: {name: fashion-mnist, root: $root,#" configs/fashion-mnist.yaml > "$work/fmnist.yaml"
cat > "$work/short.yaml" <<EOF
run_dir: $work/run
space: configs/small28.yaml
data: {name: fashion-mnist, root: $root, val_fraction: 0.05}
train: {epochs: 2, threads: 4}
search: {n_trials: 20}
finalize:
  distill_epochs: 3
  lr: 0.05
  warmup_epochs: 1
  alpha_start: 0.5
  alpha_end: 0.1
  prune: {step: 0.05, max_steps: 1, divisor: 8, tolerance: 0.003}
  prune_finetune_epochs: 1
  qat_epochs: 1
devices:
  - {name: cpu-mbv3s, budget_of: mbv3-small-0.75, validate_n: 20}
EOF

if [ "${CUDA_REFERENCES:-0}" = 1 ]; then
  for ref in mbv3-small-0.5 mbv3-small-0.75 mbv3-small-1 mbv3-large-0.5 mbv3-large-0.75 mbv3-large-1; do
    timeout "$limit" python bench/references.py --config "$work/fmnist.yaml" --only "$ref" --threads 1 \
      --workdir "$work/references" --out "$work" > "$work/logs/ref_$ref.log" 2>&1 &
  done
fi
if [ "${CUDA_CONTROLS:-0}" = 1 ]; then
  sed "s#data: {name: fashion-mnist,#data: {name: fashion-mnist, root: $root,#" configs/fashion-mnist-teachers.yaml \
    > "$work/teachers.yaml"
  for setting in labels largest ensemble; do
    for seed in 0 1; do
      timeout "$limit" python bench/teacher_controls.py --config "$work/teachers.yaml" --settings $setting \
        --seeds $seed --torch-device cuda --threads 2 --workdir "$work/controls" --out "$work/controls/${setting}_s$seed" \
        > "$work/logs/controls_${setting}_s$seed.log" 2>&1 &
    done
  done
fi
timeout 120 python -m pytest -q -rs -p no:cacheprovider tests/test_accelerator.py > "$work/logs/pytest.log" 2>&1
elapsed pytest $?
timeout 90 python bench/train_speed.py --device cuda --threads 4 --configs 3 --rounds 2 --out "$work" \
  > "$work/logs/train_speed.log" 2>&1
elapsed train_speed $?
timeout $((limit - $(date +%s) + start)) python -m edgenas.cli run "$work/short.yaml" --torch-device cuda \
  > "$work/logs/run.log" 2>&1
elapsed run $?
wait
elapsed all 0
tar czf "$out/cuda.tar.gz" --exclude='*.pt' --exclude='*.db' --exclude='*.pte' --exclude='*.onnx' \
  --exclude='*.bin' --exclude='*.xml' "$work"
cp "$work"/references/*_s0.onnx "$out"/ 2>/dev/null
tail -n 3 "$work"/logs/*.log "$work/logs/gpu.txt"
