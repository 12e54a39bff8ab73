"""The texts of a real-speech manifest as the recogniser writes them, where it hears them right.

Corpora of read speech are transcribed in their own conventions ("RUBOUT G M E F THREE NINE"); the
transcript loss (`unisono codec train token2mel --transcript-weight`) teacher-forces the tokenizer's
Whisper model with a text, so on such clips it would ask the audio for a spelling, not for the words.
This reads each clip of MANIFEST with the recogniser `unisono eval codec` scores with (faster-whisper on
the bundled tiny.en, greedy) and keeps the clips whose transcript is the reference under the scoring
normaliser (Whisper's English one: case, punctuation and spelt-out numbers do not count), with the
recogniser's own text. Clips it mishears are left out: their reference is not a text it would write,
its transcript not what was said.

    python bench/codec_recogniser_texts.py ../shared/data/real_speech_train/an4_train/manifest.jsonl \\
        corpus/texts/an4_train.jsonl --threads 2

OUT is a manifest of the kept clips (same ids, audio paths made absolute); pass it to
`--transcript-from`, which reads its texts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from unisono.audio.io import load_audio
    from unisono.data.asr_backends import WhisperBackend, WhisperConfig
    from unisono.data.crossval import normalizer
    from unisono.data.manifest import read_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    try:
        utterances = read_manifest(args.manifest)
    except (OSError, ValueError) as e:  # missing, unreadable or not JSON lines
        raise SystemExit(f"{args.manifest}: {e}") from None
    root = args.manifest.parent if args.manifest.is_file() else args.manifest
    recogniser = WhisperBackend(WhisperConfig(threads=args.threads))
    norms = {language: normalizer(language) for language in {u.language for u in utterances}}
    kept, differ = [], 0
    for k, u in enumerate(utterances, 1):
        norm = norms[u.language]
        heard = recogniser.transcribe(load_audio(root / u.audio), u.language)
        if heard.strip() and norm(heard) == norm(u.text):
            row = u.to_dict() | {"audio": str((root / u.audio).resolve()), "text": heard}
            kept.append(row)
            differ += heard != u.text
        if k % 100 == 0:
            print(f"{k}/{len(utterances)}: {len(kept)} kept", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    print(f"{args.out}: {len(kept)} of {len(utterances)} clips heard as their reference "
          f"({differ} of them written otherwise than the reference)")


if __name__ == "__main__":
    main()
