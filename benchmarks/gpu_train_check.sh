export PYTHONPATH=/tmp/site:$PWD; [ -d /tmp/site/monai ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
set -x; M="python3 -m medseg"; G=/tmp/g
$M data synth $G/train --cases 24 --shape 128 128 96 --seed 1 && $M data synth $G/test --cases 6 --shape 128 128 96 --layout brats2023 --seed 2 || exit 1
$M train brats --data $G/train --config configs/brats_smoke.yaml --no-tracking --no-progress --device cuda --fold 0 --out $G/runs --set model.name=transunet3d_small --set model.kwargs.img_size=64 --set 'train.patch_size=[64,64,64]' --set train.epochs=80 --set train.val_every=10 --set train.samples_per_volume=4 --set train.lr=0.001 --set data.num_workers=8 --set train.max_minutes=3.5 2>&1 | grep -v Warning || exit 1
B=$(ls $G/runs/*/best.pt)
$M predict --model $B $G/test $G/pred_bf16 --device cuda && $M predict --model $B $G/test $G/pred_fp32 --device cuda --fp32 && $M predict --model $B $G/test $G/pred_tta --device cuda --tta
for v in bf16 fp32 tta; do $M evaluate $G/pred_$v $G/test --out $OUT/eval_$v.csv; done
python3 - <<'PY'
import glob, nibabel as nib, numpy as np, os
for f in sorted(glob.glob('/tmp/g/pred_bf16/*.nii.gz')):
    a = np.asarray(nib.load(f).dataobj); b = np.asarray(nib.load(f.replace('bf16','fp32')).dataobj)
    print(os.path.basename(f), 'voxels differing bf16 vs fp32:', int((a != b).sum()), 'of', int((a > 0).sum()), 'labelled')
PY
