# On a CUDA machine: speed of --single-pass for the base models, and its Dice against sliding windows for a
# briefly trained transunet3d_small (synthetic data). Results: benchmarks/RESULTS.md.
export PYTHONPATH=/tmp/site:$PWD; [ -d /tmp/site/monai ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
O=${OUT:-/tmp}; M="python3 -m medseg"; G=/tmp/g
PYTHONUNBUFFERED=1 python3 benchmarks/bench_gpu.py --infer-only --single-pass --out $O/infer_single.json 2>&1 | grep -v Warning
$M data synth $G/train --cases 24 --shape 128 128 96 --seed 1 && $M data synth $G/test --cases 6 --shape 128 128 96 --layout brats2023 --seed 2 || exit 1
$M train brats --data $G/train --config configs/brats_smoke.yaml --no-tracking --no-progress --device cuda --fold 0 --out $G/runs --set model.name=transunet3d_small --set model.kwargs.img_size=64 --set 'train.patch_size=[64,64,64]' --set train.epochs=40 --set train.val_every=40 --set train.samples_per_volume=4 --set train.lr=0.001 --set data.num_workers=8 --set train.max_minutes=2 2>&1 | grep -v Warning | tail -3
B=$(ls $G/runs/*/best.pt)
$M predict --model $B $G/test $G/pred_sw --device cuda | tail -4 && $M predict --model $B $G/test $G/pred_single --device cuda --single-pass | tail -4
for v in sw single; do $M evaluate $G/pred_$v $G/test --out $O/eval_$v.csv | head -8; done
