"""The TTS arena: systems speak the same prompts, voters compare them two at a time.

    prompts × systems ─► clips (RUN/audio/SYSTEM/ID.wav) and their measured scores (eval.tts)
      ─► matches: for each prompt, every pair of systems, the order of pairs and which side is left
         drawn with a recorded seed ─► RUN/arena.sqlite
      ─► votes (left / right / tie, a reason required), one per voter and match:
           judges   each measured score is a voter (intelligibility, similarity, DNSMOS), and their
                    majority is the ensemble judge
           humans   through the rater page (`unisono eval arena serve`)
      ─► win rates per pair of systems and overall (a tie is half a win), Bradley–Terry ratings with
         bootstrap intervals resampled over prompts (as Chatbot Arena and TTS Arena do)

Votes live in SQLite (WAL, one transaction a vote): a restart loses none, a replayed vote (the
same voter on the same match) is refused rather than counted twice.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DB_FILE = "arena.sqlite"
WINNERS = ("left", "right", "tie")
# The judges: a measured score per clip, higher is better, and the difference below which it calls a tie.
JUDGES = {"intelligibility": 0.0, "similarity": 0.01, "dnsmos": 0.05}
ENSEMBLE = "judges"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id TEXT PRIMARY KEY, text TEXT NOT NULL, language TEXT NOT NULL, instruct TEXT);
CREATE TABLE IF NOT EXISTS clips (prompt_id TEXT NOT NULL, system TEXT NOT NULL, audio TEXT NOT NULL,
                                  scores TEXT NOT NULL, PRIMARY KEY (prompt_id, system));
CREATE TABLE IF NOT EXISTS matches (id INTEGER PRIMARY KEY, prompt_id TEXT NOT NULL, left_system TEXT NOT NULL,
                                    right_system TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY, match_id INTEGER NOT NULL REFERENCES matches(id),
                                  voter TEXT NOT NULL, winner TEXT NOT NULL CHECK (winner IN ('left', 'right', 'tie')),
                                  reason TEXT NOT NULL CHECK (length(trim(reason)) > 0), created REAL NOT NULL,
                                  UNIQUE (match_id, voter));
"""


class VoteError(ValueError):
    """A vote that cannot be counted; `status` is the HTTP status the rater page answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ArenaStore:
    """The arena's SQLite database. One connection per store; use one store per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- building -------------------------------------------------------------------------------
    def set_meta(self, **values) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def add_clip(self, prompt, system: str, audio: str, scores: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?)",
                            (prompt.id, prompt.text, prompt.language, prompt.instruct))
            self.db.execute("INSERT OR REPLACE INTO clips VALUES (?, ?, ?, ?)", (prompt.id, system, audio, json.dumps(scores)))

    def make_matches(self, seed: int) -> int:
        """Every pair of systems on every prompt both spoke that is not a match yet, in an order and
        with sides drawn from `seed`, after the matches already drawn (votes refer to those: they
        stay as they are). A system added to an arena later gets its matches this way."""
        existing = {(p, frozenset((a, b))) for p, a, b in
                    self.db.execute("SELECT prompt_id, left_system, right_system FROM matches")}
        start = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM matches").fetchone()[0]
        rng = np.random.default_rng([seed, start])
        spoken: dict[str, list[str]] = {}
        for prompt_id, system in self.db.execute("SELECT prompt_id, system FROM clips ORDER BY prompt_id, system"):
            spoken.setdefault(prompt_id, []).append(system)
        matches = [(p, *pair) for p, systems in spoken.items() for pair in itertools.combinations(systems, 2)
                   if (p, frozenset(pair)) not in existing]
        order = rng.permutation(len(matches))
        flips = rng.random(len(matches)) < 0.5
        rows = []
        for position, k in enumerate(order):
            prompt_id, a, b = matches[k]
            left, right = (b, a) if flips[position] else (a, b)
            rows.append((prompt_id, left, right, start + position))
        with self.db:
            self.db.executemany("INSERT INTO matches (prompt_id, left_system, right_system, position) VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    # -- voting ---------------------------------------------------------------------------------
    def match(self, match_id: int) -> dict | None:
        row = self.db.execute(
            "SELECT m.id, m.prompt_id, m.left_system, m.right_system, p.text, p.language, p.instruct, "
            "l.audio, r.audio FROM matches m JOIN prompts p ON p.id = m.prompt_id "
            "JOIN clips l ON l.prompt_id = m.prompt_id AND l.system = m.left_system "
            "JOIN clips r ON r.prompt_id = m.prompt_id AND r.system = m.right_system WHERE m.id = ?", (match_id,)).fetchone()
        if row is None:
            return None
        keys = ("id", "prompt_id", "left_system", "right_system", "text", "language", "instruct", "left_audio", "right_audio")
        return dict(zip(keys, row))

    def next_match(self, voter: str) -> dict | None:
        """The first match, in the drawn order, this voter has not voted on."""
        row = self.db.execute("SELECT id FROM matches WHERE id NOT IN (SELECT match_id FROM votes WHERE voter = ?) "
                              "ORDER BY position LIMIT 1", (voter,)).fetchone()
        return None if row is None else self.match(row[0])

    def vote(self, match_id: int, voter: str, winner: str, reason: str) -> int:
        if not isinstance(voter, str) or not voter.strip():
            raise VoteError("a vote needs a voter name")
        if winner not in WINNERS:
            raise VoteError(f"winner must be one of {', '.join(WINNERS)}, got {winner!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise VoteError("a vote needs a reason: say what made one side better (or both alike)")
        if not isinstance(match_id, int) or self.match(match_id) is None:
            raise VoteError(f"there is no match {match_id!r}", status=404)
        try:
            with self.db:
                cursor = self.db.execute("INSERT INTO votes (match_id, voter, winner, reason, created) VALUES (?, ?, ?, ?, ?)",
                                         (match_id, voter.strip(), winner, reason.strip(), time.time()))
        except sqlite3.IntegrityError:
            raise VoteError(f"{voter} has voted on match {match_id} already", status=409) from None
        return int(cursor.lastrowid)

    def outcomes(self, voters: str = "humans") -> list[tuple[str, str, str, float]]:
        """(prompt, system a, system b, score of a) for the votes of `voters`: "humans" (every voter
        that is not a judge), "judges" (the ensemble), "judge:NAME", or a voter's name."""
        if voters == "humans":
            where, args = "v.voter NOT LIKE 'judge:%' AND v.voter != ?", (ENSEMBLE,)
        else:
            where, args = "v.voter = ?", (voters,)
        rows = self.db.execute(f"SELECT m.prompt_id, m.left_system, m.right_system, v.winner FROM votes v "
                               f"JOIN matches m ON m.id = v.match_id WHERE {where} ORDER BY v.id", args).fetchall()
        return [(p, left, right, {"left": 1.0, "right": 0.0, "tie": 0.5}[w]) for p, left, right, w in rows]

    def counts(self) -> dict:
        q = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"prompts": q("SELECT COUNT(*) FROM prompts"), "clips": q("SELECT COUNT(*) FROM clips"),
                "matches": q("SELECT COUNT(*) FROM matches"),
                "human_votes": q(f"SELECT COUNT(*) FROM votes WHERE voter NOT LIKE 'judge:%' AND voter != '{ENSEMBLE}'")}


# ---- judges ------------------------------------------------------------------------------------
def judge_scores(item: dict) -> dict[str, float | None]:
    """The measured scores of a clip (an `eval.tts` item) that judges compare; higher is better."""
    counts = next(iter(item["counts"].values()), None)
    rate = None
    if counts:
        n = counts.get("hits", 0) + counts.get("substitutions", 0) + counts.get("deletions", 0)
        rate = (counts["substitutions"] + counts["deletions"] + counts["insertions"]) / max(n, 1)
    return {"intelligibility": None if rate is None else -rate, "similarity": item.get("similarity"),
            "dnsmos": (item.get("dnsmos") or {}).get("ovrl"),
            # kept for the record (rewards before and after alignment), not judged
            "delivery": item.get("delivery"), "adherence": item.get("adherence"), "ended": item.get("ended")}


def judge(left: dict, right: dict, name: str) -> str | None:
    a, b = left.get(name), right.get(name)
    if a is None or b is None:
        return None
    if abs(a - b) <= JUDGES[name]:
        return "tie"
    return "left" if a > b else "right"


def judge_all(store: ArenaStore) -> int:
    """Every judge's vote, and the ensemble's (the majority of the judges that could tell), on every match."""
    n = 0
    for (match_id,) in store.db.execute("SELECT id FROM matches ORDER BY position").fetchall():
        m = store.match(match_id)
        left, right = (json.loads(store.db.execute("SELECT scores FROM clips WHERE prompt_id = ? AND system = ?",
                                                   (m["prompt_id"], s)).fetchone()[0]) for s in (m["left_system"], m["right_system"]))
        calls = {}
        for name in JUDGES:
            call = judge(left, right, name)
            if call is not None:
                calls[name] = call
                n += _vote_once(store, match_id, f"judge:{name}", call, f"{name}: {left[name]:.3f} vs {right[name]:.3f}")
        if calls:
            tally = {w: sum(c == w for c in calls.values()) for w in ("left", "right")}
            call = "tie" if tally["left"] == tally["right"] else max(tally, key=tally.get)
            n += _vote_once(store, match_id, ENSEMBLE, call, ", ".join(f"{k} {v}" for k, v in calls.items()))
    return n


def _vote_once(store: ArenaStore, match_id: int, voter: str, winner: str, reason: str) -> int:
    try:
        store.vote(match_id, voter, winner, reason)
        return 1
    except VoteError as e:
        if e.status == 409:  # judged already (a rerun)
            return 0
        raise


# ---- aggregation -------------------------------------------------------------------------------
def win_rates(outcomes: list[tuple[str, str, str, float]], systems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(wins, games): wins[i, j] is what i scored against j (a tie is half), games[i, j] how often they met."""
    index = {s: k for k, s in enumerate(systems)}
    wins, games = np.zeros((len(systems),) * 2), np.zeros((len(systems),) * 2)
    for _, a, b, score in outcomes:
        i, j = index[a], index[b]
        wins[i, j] += score
        wins[j, i] += 1 - score
        games[i, j] += 1
        games[j, i] += 1
    return wins, games


def bradley_terry(wins: np.ndarray, games: np.ndarray, iterations: int = 200, prior: float = 0.1) -> np.ndarray:
    """Bradley–Terry strengths by Hunter's MM algorithm, on the Elo scale (mean 1000, 400 points
    for 10:1 odds). `prior`: a fraction of a tied game against every other system, so that a system
    that won or lost everything keeps a finite rating."""
    n = len(wins)
    w = wins + prior * (1 - np.eye(n)) / 2
    g = games + prior * (1 - np.eye(n))
    p = np.ones(n)
    for _ in range(iterations):
        denom = (g / (p[:, None] + p[None, :])).sum(axis=1)
        p = w.sum(axis=1) / np.maximum(denom, 1e-12)
        p = p / np.exp(np.log(p).mean())
    return 1000 + 400 * np.log10(p)


def ratings_with_intervals(outcomes, systems: list[str], rounds: int = 1000, seed: int = 0,
                           confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """System -> (rating, low, high): the interval of a bootstrap that resamples prompts."""
    wins, games = win_rates(outcomes, systems)
    rating = bradley_terry(wins, games)
    prompts = sorted({o[0] for o in outcomes})
    by_prompt = {p: [o for o in outcomes if o[0] == p] for p in prompts}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds if len(prompts) > 1 else 0):
        drawn = [o for k in rng.integers(0, len(prompts), len(prompts)) for o in by_prompt[prompts[k]]]
        samples.append(bradley_terry(*win_rates(drawn, systems)))
    if not samples:
        return {s: (float(r), float("nan"), float("nan")) for s, r in zip(systems, rating)}
    lo, hi = np.percentile(np.array(samples), [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2], axis=0)
    return {s: (float(r), float(a), float(b)) for s, r, a, b in zip(systems, rating, lo, hi)}


@dataclass
class ArenaResult:
    voters: str
    systems: list[str]
    wins: np.ndarray
    games: np.ndarray
    ratings: dict[str, tuple[float, float, float]]
    votes: int

    def win_rate(self, i: int, j: int) -> float | None:
        return None if self.games[i, j] == 0 else float(self.wins[i, j] / self.games[i, j])

    def overall(self, i: int) -> float | None:
        games = self.games[i].sum()
        return None if games == 0 else float(self.wins[i].sum() / games)


def aggregate(store: ArenaStore, voters: str = "humans", rounds: int = 1000) -> ArenaResult:
    systems = [s for (s,) in store.db.execute("SELECT DISTINCT system FROM clips ORDER BY system")]
    outcomes = store.outcomes(voters)
    wins, games = win_rates(outcomes, systems)
    ratings = ratings_with_intervals(outcomes, systems, rounds=rounds) if outcomes else {}
    return ArenaResult(voters, systems, wins, games, ratings, len(outcomes))


# ---- building and reporting ----------------------------------------------------------------------
def build(run: Path, systems: list, prompts: list, recognizers: list, similarity=None, use_dnsmos: bool = True,
          seed: int = 0, progress=None) -> ArenaStore:
    """Every system speaks every prompt (a system whose clips are all there already is skipped: a
    rerun resumes), the matches are drawn once, and the judges vote."""
    import soundfile as sf

    from unisono.eval.tts import audio_folder, evaluate

    run.mkdir(parents=True, exist_ok=True)
    store = ArenaStore(run / DB_FILE)
    store.set_meta(seed=seed, prompts=[p.id for p in prompts])
    for system in systems:
        have = {p for (p,) in store.db.execute("SELECT prompt_id FROM clips WHERE system = ?", (system.name,))}
        if have >= {p.id for p in prompts if p.language in system.languages}:
            continue
        folder = run / "audio" / audio_folder(system.name)

        def keep(name: str, prompt_id: str, audio, folder=folder) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{prompt_id}.wav", audio, 16000)

        result = evaluate(system, prompts, recognizers, similarity, use_dnsmos, seed, keep, progress)
        by_id = {p.id: p for p in prompts}
        for item in result.items:
            store.add_clip(by_id[item["id"]], system.name, str((folder / f"{item['id']}.wav").relative_to(run)),
                           judge_scores(item))
    store.make_matches(seed)
    judge_all(store)
    return store


def _percent(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def plot(results: list[ArenaResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4 * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        n = len(r.systems)
        matrix = np.full((n, n), np.nan)
        for i in range(n):
            for j in range(n):
                if r.games[i, j]:
                    matrix[i, j] = r.wins[i, j] / r.games[i, j]
        ax = row[0]
        ax.imshow(matrix, vmin=0, vmax=1, cmap="RdYlGn")
        ax.set_xticks(range(n), r.systems, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), r.systems, fontsize=8)
        for i in range(n):
            for j in range(n):
                if not np.isnan(matrix[i, j]):
                    ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center", fontsize=8)
        ax.set_title(f"win rate of row against column ({r.voters}, {r.votes} votes)", fontsize=9)
        ax = row[1]
        order = sorted(r.ratings, key=lambda s: r.ratings[s][0])
        values = np.array([r.ratings[s] for s in order])
        if len(values):
            lower = np.nan_to_num(values[:, 0] - values[:, 1])
            upper = np.nan_to_num(values[:, 2] - values[:, 0])
            ax.errorbar(values[:, 0], range(len(order)), xerr=[lower, upper], fmt="o", capsize=3)
        ax.set_yticks(range(len(order)), order, fontsize=8)
        ax.set_xlabel("Bradley–Terry rating (95% bootstrap over prompts)")
        ax.set_title(f"ratings ({r.voters})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report(store: ArenaStore, directory: Path, rounds: int = 1000) -> Path:
    """README.md and ratings.png: for the humans' votes (when there are any), the judges' ensemble
    and each judge."""
    groups = ["humans", ENSEMBLE] + [f"judge:{name}" for name in JUDGES]
    results = [r for r in (aggregate(store, g, rounds) for g in groups) if r.votes]
    counts = store.counts()
    lines = ["# TTS arena", "", f"{counts['prompts']} prompts, {counts['clips']} clips, {counts['matches']} matches, "
             f"{counts['human_votes']} human votes. Pairs and sides drawn with seed {store.meta().get('seed')}; a tie "
             "counts half a win. Ratings: Bradley–Terry (Elo scale), 95% intervals of "
             f"{rounds} bootstrap rounds over prompts.", ""]
    for r in results:
        lines += [f"## {r.voters} ({r.votes} votes)", "", "| system | rating | 95% interval | win rate | games |", "|---|---|---|---|---|"]
        for i in sorted(range(len(r.systems)), key=lambda k: -r.ratings.get(r.systems[k], (0,))[0]):
            s = r.systems[i]
            rating, lo, hi = r.ratings.get(s, (float("nan"),) * 3)
            ci = "—" if np.isnan(lo) else f"{lo:.0f} to {hi:.0f}"
            lines.append(f"| {s} | {rating:.0f} | {ci} | {_percent(r.overall(i))} | {int(r.games[i].sum())} |")
        lines += ["", "| win rate (row vs column) | " + " | ".join(r.systems) + " |", "|---|" + "---|" * len(r.systems)]
        for i, s in enumerate(r.systems):
            lines.append(f"| {s} | " + " | ".join("—" if i == j else _percent(r.win_rate(i, j)) for j in range(len(r.systems))) + " |")
        lines.append("")
    if results:
        plot(results, directory / "ratings.png")
        lines.append("![win rates and ratings](ratings.png)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory / "README.md"
