#!/usr/bin/env bash
# The recipe of the embedded default model unisono-tiny, on CPU: a synthetic bilingual corpus and
# the real training speech, the frozen Whisper tiny.en encoder cached once, then
# align -> sft-asr -> mtp -> sft-asr, and a float16 export into the package.
# Usage: docs/train/tiny.sh            (THREADS, RUNS, SYNTH, REAL and the *_STEPS override)
set -euo pipefail
REAL=${REAL:-../shared/data/real_speech_train}
SYNTH=${SYNTH:-corpus/synth}
RUNS=${RUNS:-runs/tiny}
THREADS=${THREADS:-1}
ALIGN_STEPS=${ALIGN_STEPS:-60}
SFT_STEPS=${SFT_STEPS:-850}
MTP_STEPS=${MTP_STEPS:-130}
JOINT_STEPS=${JOINT_STEPS:-20}
SFT2_STEPS=${SFT2_STEPS:-450}
OUT=${OUT:-src/unisono/assets/unisono-tiny}

# 1. 6.5 h of synthetic speech (5 h English, 1.5 h Mandarin) from offline text and voices
unisono data synth --out "$SYNTH" --hours-en 5 --hours-zh 1.5

# 2. the frozen encoder's output, once for every clip
unisono train features "$REAL/an4_train" "$REAL/speechocean762_train" "$SYNTH" --out "$RUNS/features" --threads "$THREADS"

TRAIN="[$REAL/an4_train, $REAL/speechocean762_train, $SYNTH]"
COMMON=(--threads "$THREADS" --resume --set "data.train=$TRAIN" --set "data.features=$RUNS/features"
        --set run.checkpoint_every=50)

# 3. alignment: a fresh decoder and a 4000-token BPE on the training texts; the adaptor learns first
unisono train align --out "$RUNS/align" "${COMMON[@]}" \
  --set phases.0.steps=$ALIGN_STEPS --set phases.0.warmup_steps=10

# 4. ASR fine-tuning: adaptor and decoder, SpecAugment on the cached encoder frames
unisono train sft-asr --out "$RUNS/sft-asr" --init "$RUNS/align/model" "${COMMON[@]}" \
  --set data.max_tokens=6000 --set phases.0.steps=$SFT_STEPS --set phases.0.warmup_steps=60 --set phases.0.lr=1e-3

# 5. MTP: five branches on the frozen backbone, then a short joint phase at a low rate
unisono train mtp --out "$RUNS/mtp" --init "$RUNS/sft-asr/model" "${COMMON[@]}" \
  --set data.max_tokens=6000 --set phases.0.steps=$MTP_STEPS --set phases.0.warmup_steps=20 \
  --set phases.1.steps=$JOINT_STEPS --set phases.1.warmup_steps=5 --set phases.1.lr=5e-5

# 6. a second ASR pass from the MTP model (the loss was still falling); the branches stay as trained
unisono train sft-asr --out "$RUNS/sft2" --init "$RUNS/mtp/model" "${COMMON[@]}" \
  --set data.max_tokens=6000 --set phases.0.steps=$SFT2_STEPS --set phases.0.warmup_steps=20 --set phases.0.lr=6e-4

unisono train plot "$RUNS/align" "$RUNS/sft-asr" "$RUNS/mtp" "$RUNS/sft2" --out docs/train/tiny_loss.png

# 7. into the package: float16, 1024 speech-token rows (the codec's codebook) in the vocabulary
unisono train export "$RUNS/sft2" --out "$OUT" --dtype float16 --speech-tokens 1024
