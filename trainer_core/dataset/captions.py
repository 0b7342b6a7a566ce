"""Caption handling: the trigger word, and the checks the report shows.

``apply_trigger(caption, trigger)`` puts the trigger once at the start (ltx-trainer's ``"<trigger> <caption>"``
form) unless the caption already contains it as a whole word, so it is never doubled.

Per-caption checks (``caption_findings``): missing, empty, trigger absent from the original caption (it was
inserted), and longer than the text encoder's budget. The token count is an *estimate* (about 4 characters or
0.75 words per token, the larger of the two): Gemma's tokenizer is not loaded for a report.

Across captions (``vocabulary_findings``), two simple, explainable checks:
1. Synonym groups: a small table of words that usually name the same subject ("woman", "lady", "female
   figure", ...). When captions use different words of one group, the captions that do not use the most
   common word are listed: this is the "woman with brown hair" vs "female figure" inconsistency that makes a
   LoRA fire unevenly.
2. Shared words: a content word found in at least 70% of the captions (and at least 3) is probably part of
   how the subject is described; the captions without it are listed.
Both are hints for the user to read, not errors.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

SHARED_WORD_SHARE = 0.7
MIN_CAPTIONS_FOR_VOCABULARY = 4
MAX_SHARED_WORD_FINDINGS = 8

# Words in one group usually name the same subject; the first word is the group's label.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("woman", "women", "lady", "ladies", "girl", "girls", "female", "female figure", "female character", "gal"),
    ("man", "men", "guy", "guys", "gentleman", "boy", "boys", "male", "male figure", "male character", "dude"),
    ("person", "people", "figure", "individual", "character", "subject", "human"),
    ("child", "children", "kid", "kids", "toddler", "youngster"),
    ("dog", "dogs", "puppy", "puppies", "pup", "canine", "hound", "doggo"),
    ("cat", "cats", "kitten", "kittens", "kitty", "feline"),
    ("car", "cars", "vehicle", "automobile", "sedan", "auto"),
    ("brown hair", "brunette", "brown-haired", "dark brown hair", "chestnut hair"),
    ("blonde hair", "blond hair", "blonde", "blond", "fair hair", "golden hair", "yellow hair"),
    ("black hair", "black-haired", "dark hair", "raven hair"),
    ("red hair", "redhead", "ginger hair", "auburn hair", "ginger"),
)

_STOPWORDS = frozenset(
    """a an the and or but of in on at to from with without by for as is are was were be been being it its this
    that these those there their they them he she his her him we our you your i me my while into onto over under
    up down out off then than very so too also just not no yes can will would could should has have had do does
    did one two some any each all both other more most such same own which who whom whose what when where why
    how video clip shot scene image frame camera shows showing seen""".split()  # noqa: SIM905 - readable word list
)
_WORD = re.compile(r"[a-z][a-z'-]+")


@dataclass(frozen=True)
class VocabularyFinding:
    """A cross-caption hint: ``message`` explains it, ``items`` are the ids of the captions that disagree."""

    kind: str
    message: str
    items: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "items": list(self.items)}


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def apply_trigger(caption: str | None, trigger: str) -> str:
    """``caption`` with ``trigger`` once at the start; unchanged when it already contains the trigger."""
    text = (caption or "").strip()
    if not trigger or _has_word(text, trigger):
        return text
    return f"{trigger} {text}".strip()


def estimate_tokens(text: str) -> int:
    """Rough token count of ``text`` for Gemma (an estimate, not the tokenizer's count)."""
    return max(math.ceil(len(text) / 4), math.ceil(len(text.split()) / 0.75))


def caption_findings(original: str | None, final: str, trigger: str, budget: int, origin: str) -> list[str]:
    """The per-caption checks for one item (``origin`` says where its caption came from)."""
    found = []
    if original is None:
        where = f"{origin} not found" if origin.startswith("sidecar") else f"no 'caption' in {origin}"
        alone = f"; it trains on {final!r} alone" if final else ""
        found.append(f"missing caption ({where}){alone}")
    elif not original.strip():
        found.append(f"empty caption in {origin}")
    if trigger and original and original.strip() and not _has_word(original, trigger):
        found.append(f"trigger {trigger!r} absent from the caption; inserted at the start")
    tokens = estimate_tokens(final)
    if tokens > budget:
        found.append(
            f"caption is about {tokens} tokens (estimate), over the text encoder budget of {budget}; the end "
            "will be cut off"
        )
    return found


def _terms_used(caption: str) -> set[tuple[int, str]]:
    """(group index, term) pairs in ``caption``; longer terms win so "female figure" is not also "figure"."""
    text = caption.lower()
    terms = sorted(((g, t) for g, group in enumerate(SYNONYM_GROUPS) for t in group), key=lambda x: -len(x[1]))
    used = set()
    for g, term in terms:
        pattern = re.compile(rf"(?<![\w-]){re.escape(term)}(?![\w-])")
        if pattern.search(text):
            used.add((g, term))
            text = pattern.sub(" ", text)
    return used


def _synonym_findings(captions: dict[str, str]) -> list[VocabularyFinding]:
    by_group: dict[int, dict[str, set[str]]] = {}
    for item, caption in captions.items():
        for g, term in _terms_used(caption):
            by_group.setdefault(g, {}).setdefault(term, set()).add(item)
    findings = []
    for _group, terms in sorted(by_group.items()):
        if len(terms) < 2:
            continue
        main, main_items = max(terms.items(), key=lambda kv: (len(kv[1]), kv[0]))
        others = {t: sorted(i - main_items) for t, i in terms.items() if t != main and i - main_items}
        if not others:
            continue
        items = tuple(sorted({i for v in others.values() for i in v}))
        detail = "; ".join(f"{t!r} in {', '.join(v)}" for t, v in sorted(others.items()))
        findings.append(VocabularyFinding(
            "synonyms",
            f"captions name the same kind of subject differently: {len(main_items)} say {main!r}, but {detail}. "
            f"If it is the same subject, use one word ({main!r}) everywhere.",
            items,
        ))
    return findings


def _shared_word_findings(captions: dict[str, str], trigger: str) -> list[VocabularyFinding]:
    words_by_item = {i: set(_WORD.findall(c.lower())) - _STOPWORDS - {trigger.lower()} for i, c in captions.items()}
    counts = Counter(w for words in words_by_item.values() for w in words)
    n = len(captions)
    findings = []
    for word, count in counts.most_common():
        if count < max(3, math.ceil(SHARED_WORD_SHARE * n)) or len(findings) >= MAX_SHARED_WORD_FINDINGS:
            break
        if count == n:
            continue
        lacking = tuple(sorted(i for i, words in words_by_item.items() if word not in words))
        findings.append(VocabularyFinding(
            "shared_word",
            f"{word!r} is in {count} of {n} captions but not in {', '.join(lacking)}",
            lacking,
        ))
    return findings


def vocabulary_findings(captions: dict[str, str], trigger: str = "") -> list[VocabularyFinding]:
    """Cross-caption hints for ``captions`` (item id -> original caption); see the module docstring."""
    captions = {i: c for i, c in captions.items() if c and c.strip()}
    if len(captions) < 2:
        return []
    found = _synonym_findings(captions)
    if len(captions) >= MIN_CAPTIONS_FOR_VOCABULARY:
        found += _shared_word_findings(captions, trigger)
    return found
