#!/usr/bin/env bash
# GPU figures for the tumour-map engine (issue 4) and the GPU code paths under test, in one go.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [WORK_DIR]
#
# Runs with the Python in $PYTHON (default python3) and tmln from ./src. Writes to OUT_DIR:
# device.txt, pytest.log (model/training/inference tests with CUDA visible: every path that selects
# the device automatically runs on the GPU), gpu_a.md (throughput vs the original method, 3 x 3 mm
# tissue square), gpu_d.md (60k x 40k px slide end to end). Phantom slides are written with lossless
# zlib tiles so that tifffile alone can write them (JPEG needs imagecodecs).
set -u
OUT=${1:?usage: gpu_check.sh OUT_DIR [WORK_DIR]}
WORK=${2:-/tmp/tmln-gpu-work}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi -L; nproc; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } \
    > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
# phantoms in the background while the tests run
$PY -c "
import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; import tumour_engine as B
B.COMPRESSION = 'zlib'
for name in ('p5mm', 'p15x10mm'):
    B.slide_path(Path('$WORK'), name)
" > "$OUT/phantoms.log" 2>&1 &
GEN=$!
timeout 180 $PY -m pytest tests/tumour tests/train tests/nodes tests/models -q -n 8 -p no:cacheprovider \
    > "$OUT/pytest.log" 2>&1
tail -n 15 "$OUT/pytest.log"
wait $GEN
cat "$OUT/phantoms.log"
timeout 120 $PY benchmarks/tumour_engine.py --work "$WORK" --device cuda --only a --reps 3 --bf16 --side-um 3000 \
    --points 100 --phantom-compression zlib --out "$OUT/gpu_a.md" > "$OUT/gpu_a.log" 2>&1
grep -A 12 "^| method" "$OUT/gpu_a.md" || tail -n 20 "$OUT/gpu_a.log"
timeout 100 $PY benchmarks/tumour_engine.py --work "$WORK" --device cuda --only d --precision auto \
    --phantom-compression zlib --out "$OUT/gpu_d.md" > "$OUT/gpu_d.log" 2>&1
grep -A 12 "^## (d)" "$OUT/gpu_d.md" || tail -n 20 "$OUT/gpu_d.log"
