#!/usr/bin/env bash
# The GPU figures of the README's performance section, in one run (issue 17, goal 6):
# inference images/s at the ADE20K size for the FC-CLIP ConvNeXt-L architecture in fp32, bf16
# and fp16 (peak GPU memory beside each), batched inference, a training step in fp32 and with
# autocast, and the tests marked `gpu`. Results go to $OUT (default ./gpu_results) as JSON and
# text; each step's failure is recorded and the next one still runs.
#
#   bash tools/gpu_benchmark.sh            # needs CUDA and the project importable
set -uo pipefail
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt" || exit 1
bench=(python tools/benchmark.py fcclip/fcclip_convnext_large_eval_ade20k.yaml --device cuda
       --size 512x683 --vocab ade20k-150 --task panoptic --warmup 2 --repeats 10)
status=0
step() {  # step NAME ARGS...: one benchmark run into $out/NAME.{json,txt}
    local name=$1; shift
    echo "== $name"
    "${bench[@]}" "$@" --out "$out/$name.json" 2>&1 | tee "$out/$name.txt" || status=1
}
step fp32 --batch-sizes 1,2,4,8
step bf16 --skip-text model.test.precision=bf16
step fp16 --skip-text model.test.precision=fp16
step train_fp32 --skip-text --repeats 3 --train --amp none
step train_fp16 --skip-text --repeats 3 --train --amp fp16
echo "== tests marked gpu"
python -m pytest -q -m gpu tests 2>&1 | tee "$out/pytest_gpu.txt" || status=1
exit $status
