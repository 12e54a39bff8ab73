#!/usr/bin/env bash
# The recipe of the embedded default model unisono-tiny, on CPU: a synthetic bilingual corpus and
# the real training speech, the frozen Whisper tiny.en encoder cached once, then
# align -> sft-asr -> mtp -> sft-asr -> sft-asr (+CTC) -> pretrain (speech tokens) -> cooldown -> mtp,
# and an int8 export into the package.
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
SFT3_STEPS=${SFT3_STEPS:-1100}
PRE_WARM_STEPS=${PRE_WARM_STEPS:-40}
PRE_STEPS=${PRE_STEPS:-200}
COOL_STEPS=${COOL_STEPS:-80}
MTP2_STEPS=${MTP2_STEPS:-150}
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

# 7. a third ASR pass with the auxiliary CTC loss on the adaptor frames (it makes the decoder
#    read the audio rather than lean on its language model)
unisono train sft-asr --out "$RUNS/sft3" --init "$RUNS/sft2/model" "${COMMON[@]}" \
  --set data.max_tokens=6000 --set phases.0.steps=$SFT3_STEPS --set phases.0.warmup_steps=30 --set phases.0.lr=6e-4 \
  --set phases.0.ctc_weight=0.3

# 8. speech tokens on the synthetic corpus (the codec's tokenizer: 25 Hz; 1024 codes when this ran, 4096 shipped now)
unisono codec tokenize "$SYNTH/manifest.jsonl" "${SYNTH}_tok/manifest.jsonl" --threads "$THREADS"
TOKTRAIN="[$REAL/an4_train, $REAL/speechocean762_train, ${SYNTH}_tok]"
UNIFIED=(--threads "$THREADS" --resume --set "data.train=$TOKTRAIN" --set "data.features=$RUNS/features"
         --set run.checkpoint_every=50 --set data.max_tokens=6000)

# 9. unified pretraining: the vocabulary grows one row per speech code; warm-up (embeddings, MLPs, adaptor),
#    then everything; ASR, TTS, text-speech interleaved continuation and text (no conversations in
#    this corpus, so no speech-to-speech)
unisono train pretrain --out "$RUNS/pretrain" --init "$RUNS/sft3/model" "${UNIFIED[@]}" \
  --set "data.tasks={asr: 0.5, tts: 0.2, continue: 0.1, text: 0.2}" \
  --set phases.0.steps=$PRE_WARM_STEPS --set phases.0.warmup_steps=10 --set phases.0.ctc_weight=0.3 \
  --set phases.1.steps=$PRE_STEPS --set phases.1.warmup_steps=20 --set phases.1.ctc_weight=0.3

# 10. cool-down: instructive TTS joins, a larger token budget, LR decays to 0 (every row of this
#     corpus is tier "synthetic" or untiered, so no tier filter)
unisono train cooldown --out "$RUNS/cooldown" --init "$RUNS/pretrain/model" "${UNIFIED[@]}" \
  --set data.tiers=null --set data.min_quality=null --set data.max_tokens=9000 \
  --set "data.tasks={asr: 0.6, tts: 0.1, tts-instruct: 0.15, continue: 0.05, text: 0.1}" \
  --set phases.0.steps=$COOL_STEPS --set phases.0.ctc_weight=0.3

# 11. MTP branches again, on the final backbone
unisono train mtp --out "$RUNS/mtp2" --init "$RUNS/cooldown/model" "${COMMON[@]}" \
  --set data.max_tokens=6000 --set phases.0.steps=$MTP2_STEPS --set phases.0.warmup_steps=20 \
  --set phases.1.steps=$JOINT_STEPS --set phases.1.warmup_steps=5 --set phases.1.lr=5e-5

unisono train plot "$RUNS/align" "$RUNS/sft-asr" "$RUNS/mtp" "$RUNS/sft2" "$RUNS/sft3" "$RUNS/pretrain" \
  "$RUNS/cooldown" "$RUNS/mtp2" --out docs/train/tiny_loss.png

# 12. into the package: int8 matrices with a scale per row (half of float16), the codec in speech/
unisono train export "$RUNS/mtp2" --out "$OUT" --dtype int8

# ---- speech and dialogue (docs/train/README.md, "Teaching a model to speak" and "... to converse") ----
# 13. TTS: 400 steps on 2 h of Piper en_US-joe (augmented; speech targets only from the clean clips),
#     then 2,200 steps on 4 h of clean Piper speech with AN4 ASR rehearsal
unisono data synth --engines piper --hours-en 2 --hours-zh 0 --out corpus/neural_en --workers 2
unisono codec tokenize corpus/neural_en/manifest.jsonl corpus/neural_en_tokens/manifest.jsonl --threads 2
unisono train sft-tts --init "$OUT" --out "$RUNS/tts" --set "data.train=[corpus/neural_en_tokens/manifest.jsonl]" \
  --set phases.0.steps=400 --set phases.0.warmup_steps=20 --set data.max_tokens=4000
unisono data synth --engines piper --no-augment --hours-en 4 --hours-zh 0 --out corpus/piper_clean --workers 2 --seed 1
unisono codec tokenize corpus/piper_clean/manifest.jsonl corpus/piper_clean_tokens/manifest.jsonl --threads 2
unisono train sft-tts --init "$RUNS/tts/model" --out "$RUNS/tts5" \
  --set "data.train=[corpus/piper_clean_tokens/manifest.jsonl,../shared/data/real_speech_train/an4_train/manifest.jsonl]" \
  --set "data.tasks={tts: 0.45, tts-instruct: 0.15, tts-prompted: 0.15, asr: 0.25}" --set phases.0.steps=2200 \
  --set phases.0.warmup_steps=50 --set phases.0.lr=4e-4 --set data.max_tokens=4000

# 14. spoken dialogue (3,000 rows) with Kokoro English + Mandarin speech and the TTS/ASR rehearsal: 1,200 steps
unisono data dialogue --out corpus/dialogue --count 3000 --seed 0
unisono data synth --engines kokoro --no-augment --hours-en 0.2 --hours-zh 0.4 --out corpus/kokoro_clean --workers 1 --seed 3
unisono codec tokenize corpus/kokoro_clean/manifest.jsonl corpus/kokoro_clean_tokens/manifest.jsonl --threads 1
unisono train sft-chat --init "$RUNS/tts5/model" --out "$RUNS/chat1" \
  --set "data.train=[corpus/dialogue/manifest.jsonl,corpus/piper_clean_tokens/manifest.jsonl,corpus/kokoro_clean_tokens/manifest.jsonl,../shared/data/real_speech_train/an4_train/manifest.jsonl]" \
  --set "data.tasks={chat: 0.3, tts: 0.3, tts-instruct: 0.1, tts-prompted: 0.1, asr: 0.2}" \
  --set phases.0.steps=1200 --set phases.0.warmup_steps=30 --set phases.0.lr=3e-4 --set data.max_tokens=4000
unisono train export "$RUNS/chat1" --out "$OUT" --dtype int8
