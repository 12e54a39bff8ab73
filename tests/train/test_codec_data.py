"""Codec training data: held-out texts, offsets, resume after a kill, one clip per id, draw weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.train.conftest import CODEC_D, codec_prepare_config, tiny_tokenizer
from unisono.train.codec_data import AUDIO, INDEX, CodecData, PrepareConfig, _is_clean, prepare


def test_prepare_keeps_test_texts_out_and_accounts_for_every_byte(prepared):
    data = CodecData(prepared / "data", layer=2)
    test = [json.loads(line) for line in open(prepared / "data/test-en/manifest.jsonl")]
    assert len(test) == 3 and all((prepared / "data/test-en" / r["audio"]).is_file() for r in test)
    assert {r["text"] for r in test}.isdisjoint(c["text"] for c in data.clips)
    assert not any(c["id"] in ("u4", "u9") for c in data.clips)  # augmented clips are left out
    assert len(data) + 3 == 14 - 2
    assert data.audio.size == sum(c["samples"] for c in data.clips)
    assert data.features.shape == (data.total_tokens, CODEC_D)
    for i, c in enumerate(data.clips):
        assert c["tokens"] == int(np.ceil(c["samples"] / 640))
    # features of a stored clip are what the tokenizer computes for its audio
    tok = tiny_tokenizer()
    again = tok.layer_features([data.audio_of(1)], (2,))[0][2]
    np.testing.assert_allclose(data.features_of(1).astype(np.float32), again.numpy(), atol=2e-2, rtol=1e-2)


def test_prepare_resumes_after_a_kill_without_duplicates(prepared, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared / "data", data_dir)
    lines = (data_dir / INDEX).read_text().splitlines(keepends=True)
    (data_dir / INDEX).write_text("".join(lines[:4]))  # killed after 4 index lines ...
    with open(data_dir / AUDIO, "ab") as f:
        f.write(b"\x01\x02" * 999)  # ... with audio of a block it never indexed
    data = prepare(codec_prepare_config(prepared / "synth/manifest.jsonl"), data_dir, tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    before = CodecData(prepared / "data", layer=2)
    assert sorted(c["id"] for c in data.clips) == sorted(c["id"] for c in before.clips)
    assert data.audio.size == before.audio.size
    i = [c["id"] for c in data.clips].index(before.clips[-1]["id"])
    np.testing.assert_array_equal(data.audio_of(i), before.audio_of(len(before) - 1))


def test_prepare_refuses_a_folder_made_with_other_settings(prepared):
    config = PrepareConfig(sources=[], layers=(2,))
    with pytest.raises(ValueError, match="other settings"):
        prepare(config, prepared / "data", tokenizer_factory=tiny_tokenizer)


def test_prepare_keeps_the_texts_of_evaluation_manifests_out(prepared, tmp_path):
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text("".join(json.dumps({"id": f"e{i}", "audio": "x.wav", "text": f"sentence number {i}", "language": "en",
                                               "duration": 1.0}) + "\n" for i in (0, 1, 2)))
    config = codec_prepare_config(prepared / "synth/manifest.jsonl")
    config.exclude_texts = [str(evaluation)]
    data = prepare(config, tmp_path / "data", tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    before = CodecData(prepared / "data")
    texts = {c["text"] for c in data.clips}
    assert texts.isdisjoint({"sentence number 0", "sentence number 1", "sentence number 2"})
    assert texts == {c["text"] for c in before.clips} - {"sentence number 0", "sentence number 1", "sentence number 2"}


def test_a_clip_drawn_by_two_sources_is_stored_once(prepared, tmp_path):
    # two synthetic corpora that drew the same sentence give it the same id: the first source keeps it
    config = codec_prepare_config(prepared / "synth/manifest.jsonl")
    config.sources = config.sources * 2
    data = prepare(config, tmp_path / "data", tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    ids = [c["id"] for c in data.clips]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(c["id"] for c in CodecData(prepared / "data").clips)


def test_clean_clips_may_be_louder_or_faster_but_not_noisy():
    row = lambda *kinds: {"meta": {"augment": [{"kind": k} for k in kinds]}}  # noqa: E731
    assert _is_clean({}) and _is_clean(row()) and _is_clean(row("gain", "speed"))
    for dirty in (row("noise"), row("gain", "reverb"), row("telephone"), row("speed", "limit")):
        assert not _is_clean(dirty)


def test_oversampled_sources_are_drawn_in_proportion_to_their_weight(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    ids = [c["id"] for c in data.clips]
    rows = [json.loads(line) for line in open(prepared / "synth/manifest.jsonl")]
    few = tmp_path / "few.jsonl"  # a second "source": two of the stored clips
    few.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in ids[:2]))
    weights = data.draw_weights([(str(few), 5.0)])
    assert weights.tolist() == [5.0, 5.0] + [1.0] * (len(ids) - 2)
    # the first manifest that holds a clip sets its weight
    assert data.draw_weights([(str(few), 3.0), (str(prepared / "synth/manifest.jsonl"), 2.0)]).tolist() == [3.0, 3.0] + [2.0] * (len(ids) - 2)
    with pytest.raises(ValueError, match="no clip"):
        data.draw_weights([(str(prepared / "data/test-en/manifest.jsonl"), 2.0)])
    with pytest.raises(ValueError, match="positive"):
        data.draw_weights([(str(few), 0.0)])


def test_a_folder_prepared_by_an_earlier_release_resumes_unless_it_stored_difference_features(prepared, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared / "data", data_dir)
    settings = json.loads((data_dir / "prepare.json").read_text())
    (data_dir / "prepare.json").write_text(json.dumps(settings | {"frame_difference": 0.0}))  # how they recorded plain features
    n = len(CodecData(data_dir, layer=2))
    again = prepare(codec_prepare_config(prepared / "synth/manifest.jsonl"), data_dir, tokenizer_factory=tiny_tokenizer)
    assert len(again) == n
    (data_dir / "prepare.json").write_text(json.dumps(settings | {"frame_difference": 1.0}))
    with pytest.raises(ValueError, match="frame_difference.*no longer supports"):
        CodecData(data_dir, layer=2)
