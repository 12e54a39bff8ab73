"""Spoken dialogue data: conversations whose replies and speakers are known, the user's last turn spoken.

    chatterbot-corpus conversations (English, Chinese) ───┐
    a persona matrix (name × job × city), asked over turns ├─► a row: persona, history (text turns),
    questions from known facts (sums, days, opposites, …) │   the user's turn, the reply
    questions about the speaker (gender, speaking rate)  ──┘
      ─► the user's turn spoken by an espeak-ng voice whose gender (variant m*/f*) and rate (words
         per minute) are known ─► audio/ID.flac + a manifest row (text = the user's words, so the
         row also serves ASR; meta.dialogue = persona, history, reply, and where the answer is
         known by construction the words a right reply names (expect, options); meta.speaker_attributes)

The `chat` training task (`unisono.train.tasks`) reads these rows. Replies about the speaker come
only from how the clip was made, never from a label nobody measured. Texts of the evaluation
set (`--exclude`) are never used, its personas' names and cities are not in the matrix, and its
two voices (variants f3, m3) are not among the training voices, so `unisono eval dialogue`
measures what was learned, not what was seen.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16000
MAX_REPLY_CHARS = 160  # a spoken reply: a sentence or two
MALE_VARIANTS = ("m1", "m2", "m4", "m5", "m6", "m7")  # m3 speaks the evaluation set
FEMALE_VARIANTS = ("f1", "f2", "f4", "f5")  # f3 speaks the evaluation set
RATES = {"slow": (95, 120), "normal": (150, 190), "fast": (235, 275)}  # words per minute (espeak-ng)
SOURCES = ("chatterbot", "persona", "facts", "speaker")

# The persona matrix: many names, jobs and cities, so that a model learns to take a fact from the
# system turn rather than to remember a short list. None of the evaluation set's personas' names,
# jobs or cities is here (tests/data/test_dialogue.py).
NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kara", "Leo", "Maya",
         "Nico", "Olga", "Pablo", "Rosa", "Sven", "Tara", "Victor", "Wen", "Yara", "Zoe", "Amir",
         "Aaron", "Abigail", "Adele", "Adrian", "Agnes", "Aisha", "Alba", "Alec", "Alina", "Alma", "Amara", "Anders",
         "Andre", "Anika", "Anton", "Arjun", "Astrid", "Aurora", "Axel", "Beatrice", "Bella", "Boris", "Bruno",
         "Caleb", "Camila", "Carlos", "Carmen", "Cecilia", "Celine", "Chen", "Clara", "Colin", "Dalia", "Daniel",
         "Daria", "David", "Diego", "Dina", "Dmitri", "Edith", "Edwin", "Elif", "Eliza", "Emil", "Emma", "Enzo",
         "Erik", "Esther", "Ethan", "Eva", "Fatima", "Fiona", "Flora", "Frida", "Gabriel", "Gemma", "George",
         "Gina", "Greta", "Hana", "Hannah", "Harvey", "Hassan", "Heidi", "Helga", "Henry", "Ida", "Igor", "Ingrid",
         "Isaac", "Ivan", "Jack", "Jade", "Jana", "Jasper", "Javier", "Joel", "Julia", "Julian", "Kai", "Karim",
         "Karla", "Kenji", "Klaus", "Laila", "Lars", "Laura", "Lucas", "Lucia", "Luis", "Luna", "Magnus", "Malik",
         "Marco", "Maria", "Marta", "Mateo", "Max", "Mei", "Mina", "Nadia", "Naomi", "Nina", "Noah",
         "Nora", "Oscar", "Otto", "Paula", "Petra", "Priya", "Quentin", "Rafael", "Ravi", "Rita", "Robin",
         "Ruben", "Ruth", "Sara", "Selma", "Simon", "Stella", "Tariq", "Teresa", "Theo", "Tomas", "Ulla",
         "Vera", "Viktor", "Vivian", "Walter", "Wanda", "Xavier", "Yusuf", "Yuki", "Zara", "Zeno")
JOBS = ("teacher", "doctor", "chef", "pilot", "farmer", "painter", "plumber", "lawyer", "dentist", "writer",
        "engineer", "florist", "mechanic", "musician", "photographer", "pharmacist", "architect", "electrician",
        "carpenter", "journalist", "veterinarian", "accountant", "firefighter", "police officer", "scientist",
        "designer", "tailor", "butcher", "fisherman", "jeweller", "translator", "programmer", "surgeon",
        "economist", "sculptor", "potter", "dancer", "singer", "actor", "barber", "beekeeper", "blacksmith",
        "cashier", "cook", "courier", "geologist", "historian", "lifeguard", "locksmith",
        "midwife", "optician", "astronomer", "postman", "professor", "radio host", "shepherd", "waiter",
        "welder", "zookeeper")
CITIES = ("Paris", "Madrid", "Oslo", "Boston", "Seoul", "Sydney", "Toronto", "Vienna", "Prague", "Athens", "Lima",
          "Nairobi", "Mumbai", "Chicago", "Glasgow", "Helsinki", "Warsaw", "Denver", "Amsterdam", "Ankara",
          "Auckland", "Bangkok", "Barcelona", "Beirut", "Belgrade", "Bergen", "Bogota", "Bologna", "Bristol",
          "Brussels", "Budapest", "Busan", "Calgary", "Cape Town", "Chennai", "Copenhagen", "Dallas", "Delhi",
          "Dhaka", "Edinburgh", "Florence", "Geneva", "Hamburg", "Hanoi", "Havana", "Houston", "Istanbul",
          "Jakarta", "Krakow", "Lagos", "Lyon", "Manila", "Marseille", "Melbourne", "Mexico City", "Milan",
          "Montreal", "Moscow", "Munich", "Naples", "Osaka", "Ottawa", "Perth", "Porto", "Quebec", "Quito",
          "Riga", "Rome", "Santiago", "Seattle", "Seville", "Singapore", "Sofia", "Stockholm", "Tallinn",
          "Tbilisi", "Tokyo", "Turin", "Valencia", "Vancouver", "Venice", "Vilnius", "Zagreb", "Zurich")
STYLES = ("You speak warmly and briefly.", "Keep your answers short and friendly.", "You are calm and polite.",
          "Answer in one plain sentence.", "You are cheerful and brief.")
PERSONA_QUESTIONS = {
    "name": ("What's your name?", "Who are you?", "Can you tell me your name?", "May I ask your name?"),
    "job": ("What do you do?", "What's your job?", "What is your profession?", "What do you work as?"),
    "city": ("Where do you live?", "Where are you based?", "What city are you in?", "Where is your home?"),
}
PERSONA_REPLIES = {
    "name": ("My name is {name}.", "I'm {name}.", "I am {name}, nice to meet you."),
    "job": ("I'm {a_job}.", "I work as {a_job}.", "I am {a_job}."),
    "city": ("I live in {city}.", "I'm based in {city}.", "My home is in {city}."),
}
SPEAKER_QUESTIONS = {
    "gender": ("Am I a man or a woman?", "Is this a male or a female voice?", "Can you tell if I'm a man or a woman?",
               "Is the person talking to you a man or a woman?"),
    "rate": ("Am I speaking quickly or slowly?", "How fast am I talking?", "Is my voice fast or slow?",
             "Do I talk too fast?"),
}
SPEAKER_REPLIES = {
    ("gender", "female"): ("You sound like a woman.", "A woman, I think.", "That sounds like a female voice."),
    ("gender", "male"): ("You sound like a man.", "A man, I think.", "That sounds like a male voice."),
    ("rate", "fast"): ("You are speaking quite fast.", "Pretty fast, actually.", "You're talking fast."),
    ("rate", "slow"): ("You are speaking slowly.", "Quite slowly, actually.", "You're talking slowly."),
    ("rate", "normal"): ("At a normal pace.", "You speak at a natural pace.", "At an average pace, I'd say."),
}
# The words that name an attribute's value in a reply ("A woman, I think."): a right reply names
# its value's words and no other value's.
ATTRIBUTE_VALUES = {"gender": ("female", "male"), "rate": ("slow", "fast", "normal")}
SPEAKER_ANSWERS = {"female": ("woman", "female"), "male": ("man", "male"), "fast": ("fast", "quickly"),
                   "slow": ("slow", "slowly"), "normal": ("normal", "natural", "average")}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
OPPOSITES = (("big", "small"), ("fast", "slow"), ("up", "down"), ("happy", "sad"), ("light", "dark"),
             ("old", "new"), ("wet", "dry"), ("early", "late"), ("full", "empty"), ("loud", "quiet"))


FILLERS = ("um", "uh", "well", "you know", "like")
REVISIONS = ("no wait", "sorry", "I mean", "actually")


def disfluent(text: str, rng: np.random.Generator) -> str:
    """The words of an English turn as people say them: a filler, a repeated word, or a restart
    ("What is, no wait, what's ..."). The reply is unchanged: it answers what was meant."""
    words = text.split()
    if len(words) < 3:
        return text
    kind, at = int(rng.integers(3)), int(rng.integers(1, len(words)))
    if kind == 0:
        words.insert(at, f"{rng.choice(FILLERS)},")
    elif kind == 1:
        words.insert(at, words[at - 1].strip(",.?!"))
    else:
        words = words[:at] + [f"{rng.choice(REVISIONS)},"] + [words[0].lower()] + words[1:]
    return " ".join(words)


@dataclass
class DialogueDataConfig:
    count: int = 3000  # rows
    seed: int = 0
    disfluent: float = 0.0  # share of English user turns spoken with a filler, a repetition or a restart
    shares: dict[str, float] = field(default_factory=lambda: {"chatterbot": 0.45, "persona": 0.25, "facts": 0.15,
                                                              "speaker": 0.15})
    chinese: float = 0.2  # of the chatterbot rows
    exclude: list[str] = field(default_factory=list)  # user turns never to use (the evaluation set's)


@dataclass
class DialogueRow:
    user: str
    reply: str
    language: str = "en"
    persona: str | None = None
    history: list[list[str]] = field(default_factory=list)  # [role, text] turns before the user's
    source: str = "chatterbot"
    speaker: dict[str, str] = field(default_factory=dict)  # attributes the voice must have (gender, rate)
    # Where the answer is known by construction: the words a right reply mentions (any of them), and
    # the answers the question offers (a right reply names only expected ones), as the evaluation checks.
    expect: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def _spoken(text: str) -> bool:
    """A reply a person would say: short, one paragraph, no markup or lists."""
    return 0 < len(text) <= MAX_REPLY_CHARS and not re.search(r"[*#`\[\]{}<>|_]|^\s*[-•\d]+[.)]?\s", text) \
        and "\n" not in text


def _worded(text: str) -> bool:
    """At least a word to say: two letters, or one Han character."""
    return len(re.findall(r"[^\W\d_]", text)) >= 2 or bool(re.search(r"[\u3400-\u9fff]", text))


def chatterbot_conversations(language: str) -> list[list[str]]:
    """The corpus's conversations (alternating turns) in English or (simplified) Chinese."""
    try:
        import chatterbot_corpus
        import yaml
    except ImportError:
        raise ValueError("the dialogue data needs the chatterbot corpus: pip install 'unisono[data]' "
                         "(chatterbot-corpus==1.3.3)") from None
    folder = Path(chatterbot_corpus.__file__).parent / "data" / {"en": "english", "zh": "chinese"}[language]
    out = []
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = [str(t).strip() for t in conversation if isinstance(t, (str, int, float)) and str(t).strip()]
            if len(turns) >= 2:
                out.append(turns)
    return out


def chatterbot_rows(language: str) -> list[DialogueRow]:
    rows = []
    for turns in chatterbot_conversations(language):
        for i in range(0, len(turns) - 1, 2):
            if _spoken(turns[i + 1]) and len(turns[i]) <= MAX_REPLY_CHARS and _worded(turns[i]) and _worded(turns[i + 1]):
                history = [["user" if k % 2 == 0 else "assistant", t] for k, t in enumerate(turns[:i])]
                rows.append(DialogueRow(turns[i], turns[i + 1], language, history=history, source="chatterbot"))
    return rows


def with_article(noun: str) -> str:
    """'a teacher', 'an engineer'."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def persona_row(rng: np.random.Generator) -> DialogueRow:
    """A persona, asked about one to three of its facts; the last answer is the target."""
    facts = {"name": str(rng.choice(NAMES)), "job": str(rng.choice(JOBS)), "city": str(rng.choice(CITIES))}
    persona = (f"You are {facts['name']}, {with_article(facts['job'])} who lives in {facts['city']}. "
               f"{rng.choice(STYLES)}")
    order = list(rng.permutation(list(facts)))[: int(rng.integers(1, 4))]
    history: list[list[str]] = []
    for key in order:
        question = str(rng.choice(PERSONA_QUESTIONS[key]))
        answer = str(rng.choice(PERSONA_REPLIES[key])).format(**facts, a_job=with_article(facts["job"]))
        history += [["user", question], ["assistant", answer]]
    *history, (_, user), (_, reply) = history
    return DialogueRow(user, reply, persona=persona, history=[list(t) for t in history], source="persona",
                       expect=[facts[order[-1]]])


def fact_row(rng: np.random.Generator) -> DialogueRow:
    """A question whose answer is known by construction."""
    kind = int(rng.integers(5))
    if kind == 0:
        a, b = (int(x) for x in rng.integers(0, 11, 2))
        return DialogueRow(f"What is {NUMBERS[a]} plus {NUMBERS[b]}?", f"{NUMBERS[a + b].capitalize()}.", source="facts",
                           expect=[NUMBERS[a + b], str(a + b)])
    if kind == 1:
        a = int(rng.integers(1, 11))
        b = int(rng.integers(0, a + 1))
        return DialogueRow(f"What is {NUMBERS[a]} minus {NUMBERS[b]}?", f"{NUMBERS[a - b].capitalize()}.",
                           source="facts", expect=[NUMBERS[a - b], str(a - b)])
    if kind == 2:
        i = int(rng.integers(7))
        if rng.random() < 0.5:
            return DialogueRow(f"Which day comes after {DAYS[i]}?", f"{DAYS[(i + 1) % 7]}.", source="facts",
                               expect=[DAYS[(i + 1) % 7]])
        return DialogueRow(f"Which day comes before {DAYS[i]}?", f"{DAYS[(i - 1) % 7]}.", source="facts",
                           expect=[DAYS[(i - 1) % 7]])
    if kind == 3:
        i = int(rng.integers(12))
        return DialogueRow(f"Which month comes after {MONTHS[i]}?", f"{MONTHS[(i + 1) % 12]}.", source="facts",
                           expect=[MONTHS[(i + 1) % 12]])
    a, b = OPPOSITES[int(rng.integers(len(OPPOSITES)))]
    a, b = (a, b) if rng.random() < 0.5 else (b, a)
    return DialogueRow(f"What is the opposite of {a}?", f"The opposite of {a} is {b}.", source="facts", expect=[b])


def speaker_row(rng: np.random.Generator) -> DialogueRow:
    """A question about the speaker; the reply follows from the voice the row will be spoken in."""
    attribute = "gender" if rng.random() < 0.5 else "rate"
    value = (str(rng.choice(["female", "male"])) if attribute == "gender"
             else str(rng.choice(["slow", "fast", "normal"], p=[0.4, 0.4, 0.2])))
    return DialogueRow(str(rng.choice(SPEAKER_QUESTIONS[attribute])),
                       str(rng.choice(SPEAKER_REPLIES[(attribute, value)])), source="speaker",
                       speaker={attribute: value}, expect=list(SPEAKER_ANSWERS[value]),
                       options=[w for v in ATTRIBUTE_VALUES[attribute] for w in SPEAKER_ANSWERS[v]])


def _key(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def excluded_turns(paths: list[str]) -> set[str]:
    """The user turns of evaluation prompt files (`eval/prompts/dialogue.jsonl` rows)."""
    out = set()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.update(_key(t) for t in json.loads(line).get("turns") or [])
    return out


def plan_rows(config: DialogueDataConfig) -> Iterator[DialogueRow]:
    """`config.count` rows drawn from the sources by their shares (deterministic in the seed)."""
    rng = np.random.default_rng(config.seed)
    excluded = excluded_turns(config.exclude)
    pools = {lang: [r for r in chatterbot_rows(lang) if _key(r.user) not in excluded] for lang in ("en", "zh")}
    names = [s for s in SOURCES if config.shares.get(s, 0) > 0]
    weights = np.array([config.shares[s] for s in names], dtype=float)
    made = 0
    while made < config.count:
        source = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if source == "chatterbot":
            pool = pools["zh" if rng.random() < config.chinese and pools["zh"] else "en"]
            row = pool[int(rng.integers(len(pool)))]
        else:
            row = {"persona": persona_row, "facts": fact_row, "speaker": speaker_row}[source](rng)
        if _key(row.user) in excluded:
            continue
        if row.language == "en" and config.disfluent and rng.random() < config.disfluent:
            row = dataclasses.replace(row, user=disfluent(row.user, rng))
        made += 1
        yield row


def voice_for(row: DialogueRow, rng: np.random.Generator) -> tuple[str, dict, dict[str, str]]:
    """(espeak-ng voice, its settings, the attributes it has) for speaking a row's user turn."""
    gender = row.speaker.get("gender") or str(rng.choice(["female", "male"]))
    variant = str(rng.choice(FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS))
    rate = row.speaker.get("rate") or "normal"
    lo, hi = RATES[rate]
    wpm = int(rng.integers(lo, hi + 1))
    base = "cmn" if row.language == "zh" else str(rng.choice(["en-us", "en-gb"]))
    return f"{base}+{variant}", {"wpm": wpm, "pitch": int(rng.integers(40, 61))}, {"gender": gender, "rate": rate}


def build(out: Path, config: DialogueDataConfig, progress=None) -> Path:
    """Speak every planned row's user turn and write `out/manifest.jsonl` (a finished row is kept
    on a rerun: the build resumes)."""
    from unisono.audio.io import save_audio
    from unisono.data.engines import Voice, render
    from unisono.data.manifest import ManifestWriter, Utterance, read_manifest, truncate_partial_tail

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    done = set()
    if manifest.exists():
        truncate_partial_tail(manifest)
        done = {u.id for u in read_manifest(manifest)}
    rng = np.random.default_rng(config.seed + 1)
    with ManifestWriter(manifest, fsync=False) as writer:
        for index, row in enumerate(plan_rows(config)):
            voice, settings, attributes = voice_for(row, rng)  # drawn for every row, so a resume draws alike
            uid = f"dlg-{config.seed}-{index:06d}"
            if uid not in done:
                audio = render(Voice("espeak-ng", voice, row.language), row.user, settings, SAMPLE_RATE)
                path = Path("audio") / f"{uid}.flac"
                save_audio(out / path, audio, SAMPLE_RATE)
                writer.write(Utterance(id=uid, audio=str(path), text=row.user, language=row.language,
                                       duration=round(len(audio) / SAMPLE_RATE, 4), speaker=f"espeak-ng:{voice}", source=f"dialogue:{row.source}",
                                       meta={"engine": "espeak-ng", "voice": voice, "synth": settings,
                                             "speaker_attributes": attributes, "synthetic": True,
                                             "dialogue": {"persona": row.persona, "history": row.history,
                                                          "reply": row.reply, "source": row.source,
                                                          **({"expect": row.expect, "options": row.options}
                                                             if row.expect else {})}}))
            if progress is not None:
                progress()
    return manifest
