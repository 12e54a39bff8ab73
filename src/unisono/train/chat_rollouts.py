"""Preference data for spoken dialogue from a generative judge: sample replies, let the judge rank them, pair them.

    a spoken turn (a `unisono data dialogue` row: persona, earlier turns, the turn's audio)
      ─► N replies from the model, decoded from the chat mode's own prompt (`modes.chat`), sampled
         (seed = base seed + 1000 × prompt index + candidate index, recorded)
      ─► rewards:
           judge    the judge's probability-weighted score (1-5) of the reply (`eval.judge`; its rubric:
                    persona consistency, helpfulness, spoken style, brevity)
           answer   where the row's answer is known by construction (a persona fact, a fact question,
                    the speaker's gender or rate): 1 when the reply names it, 0 when not, checked as
                    `unisono eval dialogue` checks (`eval.dialogue.check_answer`); absent elsewhere
           length   -1 for an empty reply, minus 0.05 a word beyond `max_words` (a spoken reply is short)
      ─► the best and the worst reply of a turn are a pair when their totals differ by `margin`

Why DPO on judge-ranked pairs rather than GRPO or RLOO: on a CPU the judge is the cost (an LLM
forward per reply), and offline pairs score each reply once and can be reused, resumed and
inspected; the DPO stage (`train.dpo`) is the one the TTS mode already aligns with, on the one
Trainer. Online methods would re-score fresh samples every step. The judge used for rewards may
be cheaper than the one used to evaluate (`max_new_tokens=0`: the score without a critique), so
the held-out evaluation is not the very signal that was optimised. A small judge barely tells a
right answer from a wrong one (docs/eval/dialogue.md); the answer reward is the verifiable signal
beside it, as rule-based rewards stand beside a reward model.

RUN/rollouts.jsonl holds a line per turn (every candidate's seed, reply and rewards), appended turn by
turn, and a killed run resumes; RUN/pairs.jsonl is rebuilt from it (`train.rollouts`). A turn whose
audio cannot be read is skipped with a warning (and tried again by a later run).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from unisono.train.rollouts import ROLLOUTS_FILE, read_rollouts, write_pairs

log = logging.getLogger("unisono.rlhf")


@dataclass
class ChatRolloutConfig:
    candidates: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 48
    max_words: int = 30
    seed: int = 0
    margin: float = 0.1
    judge_weight: float = 1.0
    length_weight: float = 1.0
    answer_weight: float = 1.0


def chat_prompts(manifest: Path, count: int, seed: int = 0) -> list[dict]:
    """`count` dialogue rows of a `unisono data dialogue` manifest as rollout prompts (audio paths made absolute)."""
    import numpy as np

    from unisono.data.manifest import read_manifest

    rows = [r for r in read_manifest(manifest) if (r.meta.get("dialogue") or {}).get("reply")]
    if not rows:
        raise ValueError(f"{manifest} holds no dialogue rows (make them with `unisono data dialogue`)")
    picked = np.random.default_rng(seed).permutation(len(rows))[:count]
    out = []
    for i in sorted(int(k) for k in picked):
        r, dialogue = rows[i], rows[i].meta["dialogue"]
        out.append({"id": r.id, "text": r.text, "language": r.language,
                    "audio": str(r.audio_path(Path(manifest).parent).resolve()), "persona": dialogue.get("persona"),
                    "history": dialogue.get("history") or [], "expect": dialogue.get("expect") or [],
                    "options": dialogue.get("options") or []})
    return out


def length_reward(reply: str, max_words: int) -> float:
    words = len(reply.split())
    return -1.0 if words == 0 else -0.05 * max(0, words - max_words)


def answer_reward(reply: str, prompt: dict) -> float | None:
    """1.0 when the reply names the prompt's known answer, 0.0 when not, None when it has none."""
    from unisono.eval.dialogue import check_answer

    if not prompt.get("expect"):
        return None
    return float(check_answer(reply, prompt["expect"], prompt.get("options"), prompt.get("language") or "en"))


def chat_rollouts(model, model_name: str, prompts: list[dict], run: Path, config: ChatRolloutConfig, judge,
                  progress: Callable[[], None] | None = None) -> list[dict]:
    """Roll out every prompt not yet in RUN/rollouts.jsonl; returns the pairs of all of them."""
    from unisono.audio.io import AudioError, load_audio
    from unisono.model.vocab import Turn
    from unisono.modes.chat import ChatOptions, Conversation, embed_turns

    run.mkdir(parents=True, exist_ok=True)
    path = run / ROLLOUTS_FILE
    done = {row["prompt"]["id"] for row in read_rollouts(path)}
    with open(path, "a", encoding="utf-8") as out:
        for index, prompt in enumerate(prompts):
            if prompt["id"] in done:
                if progress:
                    progress()
                continue
            try:
                audio = load_audio(prompt["audio"])
            except (AudioError, OSError) as e:  # left out of this run, tried again by the next
                log.warning("turn %s skipped: %s", prompt["id"], e)
                if progress:
                    progress()
                continue
            dialogue = [(role, text) for role, text in prompt["history"]] + [("user", prompt["text"])]
            options = ChatOptions(system=prompt["persona"], max_tokens=config.max_tokens,
                                  temperature=config.temperature, top_p=config.top_p, speak=False)
            conversation = Conversation(model, options)
            conversation.history = [Turn(role, [text]) for role, text in prompt["history"]]
            embeds, _ = embed_turns(model, conversation.prompt(audio))  # the turn's audio encoded once
            candidates = []
            for k in range(config.candidates):
                seed = config.seed + index * 1000 + k
                conversation.options = replace(options, seed=seed)
                reply, _ = conversation.reply_from(embeds)
                verdict = judge(reply, dialogue, prompt["persona"])
                rewards = {"judge": round(float(verdict.expected), 4),
                           "length": round(length_reward(reply, config.max_words), 4)}
                total = config.judge_weight * rewards["judge"] + config.length_weight * rewards["length"]
                answer = answer_reward(reply, prompt)
                if answer is not None:
                    rewards["answer"] = answer
                    total += config.answer_weight * answer
                candidates.append({"seed": seed, "tokens": reply, "rewards": rewards, "total": round(total, 4)})
            row = {"prompt": prompt, "model": model_name, "judge": getattr(judge, "source", type(judge).__name__),
                   "config": asdict(config), "candidates": candidates}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            if progress:
                progress()
    return write_pairs(run, config.margin)
