"""The TTS arena: matches drawn once from a seed, votes kept in SQLite, judges, win rates and
Bradley–Terry ratings, and the rater page in a real browser."""

from __future__ import annotations

import math
import shutil
import threading
import time

import numpy as np
import pytest

from unisono.eval.arena import (ArenaStore, VoteError, aggregate, bradley_terry, judge, judge_all,
                                ratings_with_intervals, report, win_rates)
from unisono.eval.tts import TTSPrompt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def small_arena(path, systems=("a", "b", "c"), prompts=4, seed=7) -> ArenaStore:
    store = ArenaStore(path / "arena.sqlite")
    for p in range(prompts):
        prompt = TTSPrompt(f"p{p}", f"Sentence {p}.")
        for k, s in enumerate(systems):  # a is the most intelligible, c the best sounding
            store.add_clip(prompt, s, f"audio/{s}/p{p}.wav", {"intelligibility": -0.1 * k, "similarity": None,
                                                              "dnsmos": 2.0 + 0.5 * k})
    store.make_matches(seed)
    return store


def test_bradley_terry_by_hand():
    wins, games = win_rates([("p", "x", "y", 1.0)] * 3 + [("p", "x", "y", 0.0)], ["x", "y"])
    assert wins.tolist() == [[0, 3], [1, 0]] and games.tolist() == [[0, 4], [4, 0]]
    rating = bradley_terry(wins, games, prior=0.0)  # strengths 3:1
    assert rating[0] - rating[1] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert rating.mean() == pytest.approx(1000)
    ties, _ = win_rates([("p", "x", "y", 0.5)], ["x", "y"])
    assert ties.tolist() == [[0, 0.5], [0.5, 0]]
    swept = bradley_terry(*win_rates([("p", "x", "y", 1.0)] * 5, ["x", "y"]))  # the prior keeps it finite
    assert np.isfinite(swept).all() and swept[0] > swept[1]


def test_the_bootstrap_resamples_prompts():
    rng = np.random.default_rng(0)
    outcomes = [(f"p{k}", "x", "y", float(rng.random() < 0.75)) for k in range(80)]
    r = ratings_with_intervals(outcomes, ["x", "y"], rounds=300)
    assert r["x"][1] < r["x"][0] < r["x"][2] and r["x"][1] > 1000  # x is better, and the interval says so
    single = ratings_with_intervals(outcomes[:1], ["x", "y"], rounds=300)
    assert math.isnan(single["x"][1])  # one prompt: nothing to resample


def test_matches_are_drawn_once_with_random_sides(tmp_path):
    store = small_arena(tmp_path)
    rows = store.db.execute("SELECT prompt_id, left_system, right_system, position FROM matches ORDER BY position").fetchall()
    assert len(rows) == 4 * 3 and sorted(r[3] for r in rows) == list(range(12))
    pairs = {(p, frozenset((l, r))) for p, l, r, _ in rows}
    assert len(pairs) == 12  # every pair of systems once a prompt
    assert {(l, r) for _, l, r, _ in rows} >= {("a", "b"), ("b", "a")} or {(l, r) for _, l, r, _ in rows} >= {("b", "c"), ("c", "b")}
    assert store.make_matches(7) == 0  # drawn once: votes refer to them
    store.add_clip(TTSPrompt("p0", "Sentence 0."), "d", "audio/d/p0.wav", {"intelligibility": 0.0})
    assert store.make_matches(7) == 3  # a system added later meets the others on its prompts
    after = store.db.execute("SELECT prompt_id, left_system, right_system, position FROM matches ORDER BY position").fetchall()
    assert after[:12] == rows and {r[3] for r in after[12:]} == {12, 13, 14}
    again = small_arena(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path)
    assert again.db.execute("SELECT prompt_id, left_system, right_system FROM matches ORDER BY position").fetchall() == \
        [(p, l, r) for p, l, r, _ in rows]  # the same seed draws the same arena


def test_votes_are_checked_kept_and_never_counted_twice(tmp_path):
    store = small_arena(tmp_path)
    first = store.next_match("ann")
    with pytest.raises(VoteError, match="needs a reason") as e:
        store.vote(first["id"], "ann", "left", "   ")
    assert e.value.status == 400
    with pytest.raises(VoteError, match="winner must be"):
        store.vote(first["id"], "ann", "A", "clearer")
    with pytest.raises(VoteError, match="no match 999") as e:
        store.vote(999, "ann", "left", "clearer")
    assert e.value.status == 404
    store.vote(first["id"], "ann", "left", "clearer")
    with pytest.raises(VoteError, match="already") as e:
        store.vote(first["id"], "ann", "right", "changed my mind")
    assert e.value.status == 409
    assert store.next_match("ann")["id"] != first["id"] and store.next_match("bob")["id"] == first["id"]
    store.close()
    reopened = ArenaStore(tmp_path / "arena.sqlite")  # a restart loses nothing
    assert reopened.outcomes("humans") == [(first["prompt_id"], first["left_system"], first["right_system"], 1.0)]


def test_judges_vote_on_their_score_and_the_ensemble_on_their_majority(tmp_path):
    assert judge({"dnsmos": 3.0}, {"dnsmos": 3.04}, "dnsmos") == "tie"
    assert judge({"dnsmos": 3.0}, {"dnsmos": 3.2}, "dnsmos") == "right"
    assert judge({"similarity": None}, {"similarity": 0.5}, "similarity") is None
    store = small_arena(tmp_path)
    judge_all(store)
    assert judge_all(store) == 0  # a rerun adds nothing
    intelligible = aggregate(store, "judge:intelligibility", rounds=0)
    sounding = aggregate(store, "judge:dnsmos", rounds=0)
    a, c = intelligible.systems.index("a"), intelligible.systems.index("c")
    assert intelligible.overall(a) == 1.0 and sounding.overall(c) == 1.0
    ensemble = aggregate(store, "judges", rounds=0)
    assert ensemble.votes == 12 and ensemble.overall(ensemble.systems.index("b")) == 0.5  # one judge each way: ties


def test_the_report_changes_with_the_votes(tmp_path):
    store = small_arena(tmp_path)
    judge_all(store)
    before = report(store, tmp_path, rounds=50).read_text()
    assert "## humans" not in before and "## judges (12 votes)" in before and (tmp_path / "ratings.png").is_file()
    m = store.next_match("ann")
    store.vote(m["id"], "ann", "right", "more natural")
    after = report(store, tmp_path, rounds=50).read_text()
    assert "## humans (1 votes)" in after and "1 human votes" in after


@pytest.fixture
def rater(tmp_path):
    """An arena of two real voices on three prompts, and its rater page on loopback."""
    import uvicorn

    from unisono.eval.arena import build
    from unisono.eval.arena_app import create_arena_app
    from unisono.eval.tts import build_system
    from unisono.peers.recognizers import build_recognizer

    if shutil.which("espeak-ng") is None or shutil.which("flite") is None:
        pytest.skip("needs espeak-ng and flite")
    prompts = [TTSPrompt(f"p{k}", t) for k, t in enumerate(("Turn left here.", "It is cold today.", "Close the door."))]
    build(tmp_path, [build_system("espeak-ng"), build_system("flite")], prompts, [build_recognizer("faster-whisper")],
          use_dnsmos=False, seed=1)
    server = uvicorn.Server(uvicorn.Config(create_arena_app(tmp_path), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", tmp_path
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_the_api_refuses_bad_votes(rater):
    import httpx2 as httpx  # the HTTP client the openai package is built on

    url, _ = rater
    m = httpx.get(f"{url}/api/next", params={"voter": "ann"}).json()["match"]
    assert httpx.get(f"{url}/{m['left']}").headers["content-type"] == "audio/wav"
    assert "espeak" not in str(m) and "flite" not in str(m)  # the systems stay hidden
    assert httpx.post(f"{url}/api/vote", content=b"{not json").status_code == 400
    assert httpx.post(f"{url}/api/vote", json={"match_id": m["id"], "voter": "ann", "winner": "left"}).status_code == 400
    assert httpx.post(f"{url}/api/vote", json={"match_id": 77, "voter": "ann", "winner": "left", "reason": "x"}).status_code == 404
    ok = httpx.post(f"{url}/api/vote", json={"match_id": m["id"], "voter": "ann", "winner": "tie", "reason": "alike"})
    assert ok.status_code == 201
    replay = httpx.post(f"{url}/api/vote", json={"match_id": m["id"], "voter": "ann", "winner": "tie", "reason": "alike"})
    assert replay.status_code == 409 and "already" in replay.json()["error"]["message"]
    assert httpx.get(f"{url}/api/next").status_code == 400
    assert httpx.get(f"{url}/audio/{m['id']}/middle").status_code == 400


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_rater_votes_in_the_browser_and_the_vote_lands(rater):
    from playwright.sync_api import sync_playwright

    url, run = rater
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.fill("#voter", "rita")
        page.dispatch_event("#voter", "change")
        page.wait_for_function("document.getElementById('prompt').textContent.length > 0")
        first = page.text_content("#prompt")
        page.wait_for_function("document.getElementById('audio-left').readyState >= 1")  # the clip loads
        page.click("#submit")  # nothing picked: refused on the page
        assert "Pick A, B" in page.text_content("#status")
        page.keyboard.press("b")
        page.fill("#reason", "")
        page.click("#submit")  # no reason: the server refuses it
        page.wait_for_function("document.getElementById('status').textContent.includes('reason')")
        page.fill("#reason", "B says every word")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Vote')")
        page.wait_for_function("document.getElementById('tally').textContent.startsWith('1 human')")
        assert not errors
        browser.close()
    store = ArenaStore(run / "arena.sqlite")
    rows = store.db.execute("SELECT voter, winner, reason FROM votes WHERE voter = 'rita'").fetchall()
    assert rows == [("rita", "right", "B says every word")]
    text = report(store, run, rounds=20).read_text()
    assert "## humans (1 votes)" in text and first
