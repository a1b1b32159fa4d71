# GPU performance pass for issue 7 (run through the device tool; outputs under $OUT):
# per-stage profile of a 240x240x155 case for both base models, sw_batch / channels_last trials,
# training throughput through the real data pipeline, and inference scaling with size and case count.
export PYTHONPATH=/tmp/site:$PWD; [ -d /tmp/site/monai ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"
P="timeout 120 python3 benchmarks/profile_case.py --cases 3"
for m in transunet3d_base swinunet3d_base; do
  $P --model $m --sw-batch 4
  $P --model $m --sw-batch 8
  $P --model $m --sw-batch 4 --channels-last
done 2>&1 | grep -v Warning | tee $OUT/profile.txt
timeout 200 python3 benchmarks/bench_train.py --device cuda --model transunet3d_base --patch 128 --workers 8 --cases 8 --samples 4 --epochs 3 2>&1 | grep -v Warning | tee $OUT/bench_train_gpu.txt
timeout 150 python3 benchmarks/bench_scaling.py --model transunet3d_base --patch 128 --device cuda 2>&1 | grep -v Warning | tee $OUT/scaling_gpu.txt
