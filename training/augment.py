"""Negation augmentation: short labelled sentences built from templates written for
training, to teach the sentiment model that "not" flips what it negates.

IMDB reviews are long, and in them negation words mostly come with complaints, so a
model trained on IMDB alone reads "not", "didn't" and "never" as negative whatever
they negate ("Not bad." -> negative 0.97). These templates pair negators with
positive and negative words in frames of their own: negated criticism (positive),
negated praise (negative), plain praise and criticism (anchors), contrast ("X, but Y"
takes Y's side) and a few double negations.

They are written apart from the check set (tests/data/negation_set.jsonl) and must
not copy or paraphrase it: ``generate`` drops every sentence whose word set overlaps
a check item's by half or more (Jaccard), so the check measures generalisation from
the phenomenon, not recall of its sentences.
"""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

POS_ADJ = ["good", "great", "excellent", "wonderful", "enjoyable", "fun", "funny", "moving",
           "clever", "brilliant", "entertaining", "charming", "gripping", "beautiful",
           "fantastic", "superb", "touching", "delightful", "engaging", "smart", "witty",
           "exciting", "impressive", "lovely", "sweet", "thrilling", "powerful", "fresh"]
NEG_ADJ = ["bad", "terrible", "awful", "boring", "dull", "tedious", "stupid", "pointless",
           "predictable", "bland", "weak", "lame", "poor", "slow", "forgettable", "annoying",
           "silly", "messy", "painful", "disappointing", "horrible", "dreadful", "clumsy",
           "cheap", "shallow", "irritating", "unfunny", "confusing"]
POS_NOUN = ["gem", "treat", "delight", "triumph", "joy", "classic", "pleasure", "success"]
NEG_NOUN = ["mess", "disaster", "bore", "failure", "letdown", "chore", "flop", "dud"]
POS_VERB = ["love", "enjoy", "like", "admire", "recommend"]
NEG_VERB = ["hate", "dislike", "regret", "resent"]
SUBJECTS = ["the movie", "this film", "the show", "the story", "the script", "the sequel",
            "the acting", "the plot", "this picture", "the series", "the remake",
            "the ending", "the cast", "the director's work", "the soundtrack", "the finale",
            "the second half", "the lead", "the animation", "the screenplay"]
# verb phrases (base form, third person) for "never / doesn't / not once does ..."
NEG_VP = [("drag", "drags"), ("fall flat", "falls flat"), ("feel forced", "feels forced"),
          ("lose steam", "loses steam"), ("go nowhere", "goes nowhere"),
          ("miss the mark", "misses the mark"), ("fall apart", "falls apart"),
          ("outstay its welcome", "outstays its welcome"), ("feel rushed", "feels rushed"),
          ("grate", "grates"), ("sag", "sags"), ("stumble", "stumbles")]
POS_VP = [("work", "works"), ("deliver", "delivers"), ("hold up", "holds up"),
          ("shine", "shines"), ("pay off", "pays off"), ("hit the mark", "hits the mark"),
          ("land", "lands"), ("soar", "soars"), ("click", "clicks"), ("impress", "impresses"),
          ("satisfy", "satisfies"), ("come alive", "comes alive")]
NEG_FEEL = ["bored", "annoyed", "irritated", "let down", "frustrated", "disappointed"]
POS_FEEL = ["moved", "impressed", "entertained", "thrilled", "amused", "charmed"]
QUALITY = ["merit", "heart", "wit", "style", "ambition", "warmth", "humour", "flair"]

# {s} subject, {pa}/{na} positive/negative adjective, {pn}/{nn} nouns, {pv}/{nv} verbs,
# {pvp}/{nvp} verb phrases, {fp}/{fn} feelings. A frame written with the negative words
# reads positive once negated; its mirror, the same frame with the positive words,
# reads negative.
_MIRROR = {"{na": "{pa", "{nv": "{pv", "{nn": "{pn", "{fn": "{fp", "feared": "hoped"}
_MIRROR |= {v: k for k, v in _MIRROR.items()}
_MIRROR_RE = re.compile("|".join(map(re.escape, _MIRROR)))


def _mirrored(frames: list[str]) -> list[tuple[str, int]]:
    """Each frame labelled positive, then each frame's mirror labelled negative."""
    return ([(f, 1) for f in frames]
            + [(_MIRROR_RE.sub(lambda m: _MIRROR[m.group()], f), 0) for f in frames])


# (template, label)
TEMPLATES: list[tuple[str, int]] = [
    # negated criticism -> positive, and its mirror, negated praise -> negative
    *_mirrored([
        "{s} is not {na}.", "{s} was not {na} at all.", "{s} is never {na}.",
        "{s} isn't {na}.", "{s} wasn't {na}, not even a little.",
        "i did not {nv} {s}.", "i didn't {nv} {s} at all.",
        "{s} is not a {nn}.", "{s} was no {nn}.", "nothing in {s} is {na}.",
        "{s} never gets {na}.", "i wouldn't call {s} {na}.",
        "{s} is hardly {na}.", "not {na}, not {na2}: just {pa}.",
    ]),
    # anchors
    ("{s} is {pa}.", 1), ("{s} was {pa} and {pa2}.", 1), ("i {pv} {s}.", 1),
    ("{s} is {na}.", 0), ("{s} was {na} and {na2}.", 0), ("i {nv} {s}.", 0),
    # contrast: the clause after "but" decides
    ("{s} looked {na}, but it was {pa}.", 1), ("i thought {s} would be {na}, but it is {pa}.", 1),
    ("{s} starts {na} but ends {pa}.", 1), ("{s} looked {pa}, but it was {na}.", 0),
    ("i thought {s} would be {pa}, but it is {na}.", 0), ("{s} starts {pa} but ends {na}.", 0),
    # double negation
    ("there was nothing in {s} i did not {pv}.", 1), ("i can't say i didn't {pv} {s}.", 1),
    ("there was nothing in {s} that wasn't {na}.", 0), ("i can't say i didn't {nv} {s}.", 0),
    # the same phenomena in more frames: negators with verb phrases, feelings, "far
    # from" and "anything but", and negated negatives in the second clause
    *_mirrored([
        "{s} never {nvp}.", "{s} doesn't {nvp}, not once.", "at no point does {s} {nvp}.",
        "{s} did not {nvp} the way i feared.", "i was never {fn} watching {s}.",
        "{s} never left me {fn}.", "{s} is far from {na}.", "{s} is anything but {na}.",
        "there is nothing {na} about {s}.", "none of {s} felt {na}.",
        "{s} is neither {na} nor {na2}.", "i would never call {s} a {nn}.",
    ]),
    # double negation: a negated negative inside a negated clause
    ("{s} is not without {q}.", 1), ("no part of {s} fails to {pvp_base}.", 1),
    ("it is impossible to {nv} {s}.", 1), ("{s} never once failed to keep me {fp}.", 1),
    ("i never found {s} {na}, not for a minute.", 1), ("there is not a {na} minute in {s}.", 1),
    ("no part of {s} manages to {pvp_base}.", 0), ("it is impossible to {pv} {s}.", 0),
    ("not one minute of {s} was anything other than {na}.", 0),
    ("i never found {s} {pa}, not for a minute.", 0), ("there is not a {pa} minute in {s}.", 0),
    # contrast the other way round: a good or bad start, then the verdict
    ("despite a {na} opening, {s} is {pa}.", 1), ("despite a {pa} opening, {s} is {na}.", 0),
    ("{s} had {na} moments, yet overall it is {pa}.", 1),
    ("{s} had {pa} moments, yet overall it is {na}.", 0),
    ("the trailer was {na}, though {s} itself is {pa}.", 1),
    ("the trailer was {pa}, though {s} itself is {na}.", 0),
]

# More frames (``generate(..., more=True)``, ``--augment-more``): negation carried across
# a clause ("i could not point to a scene that was {na}"), negated feelings and
# verdicts, and a verdict after a concession. The templates above stay as they were, so
# a model trained without the option is made again the same way.
MORE_TEMPLATES: list[tuple[str, int]] = [
    *_mirrored([
        "i could not point to a single scene in {s} that was {na}.",
        "i never caught myself thinking {s} was {na}.",
        "not once did {s} strike me as {na}.",
        "i did not come away from {s} feeling {fn}.",
        "nobody i saw {s} with found it {na}.",
        "{s} does not {nvp_base} even once.",
        "i honestly cannot call {s} {na}.",
        "there wasn't anything {na} in {s}, as far as i could tell.",
        "i would not describe {s} as a {nn} in any way.",
        "{s} never once felt {na} to me.",
    ]),
    # double negation: a negated clause inside a negated one
    ("there was no part of {s} that i did not {pv}.", 1),
    ("i cannot think of a moment in {s} that wasn't {pa}.", 1),
    ("not a single minute of {s} failed to keep me {fp}.", 1),
    ("every scene of {s} i feared would be {na} turned out {pa}.", 1),
    ("there was no part of {s} that did not feel {na}.", 0),
    ("i cannot think of a moment in {s} that wasn't {na}.", 0),
    ("not a single minute of {s} failed to leave me {fn}.", 0),
    ("every scene of {s} i hoped would be {pa} turned out {na}.", 0),
    # a concession, then the verdict
    ("{s} is {na} in places, but i was {fp} by the end.", 1),
    ("{s} is {pa} enough, but mostly it is {na}.", 0),
    ("fine, {s} is a little {na}, yet it is {pa} where it matters.", 1),
    ("sure, {s} is {pa} at times, but overall it left me {fn}.", 0),
]

_WORD = re.compile(r"[a-z']+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def too_close(text: str, check: list[set[str]], limit: float = 0.5) -> bool:
    """Whether ``text`` shares half or more of its words with a check item (Jaccard)."""
    w = _words(text)
    return any(len(w & c) / max(1, len(w | c)) >= limit for c in check)


def generate(n: int, seed: int = 0, check_set: Path | None = None,
             more: bool = False) -> list[tuple[str, int]]:
    """``n`` distinct (sentence, label) pairs, balanced, none close to the check set
    (``more``: drawn from TEMPLATES and MORE_TEMPLATES)."""
    templates = TEMPLATES + MORE_TEMPLATES if more else TEMPLATES
    from training.evaluate import NEGATION_SET, load_negation_set

    check = [_words(i["text"]) for i in load_negation_set(check_set or NEGATION_SET)]
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    for _ in itertools.count():
        if len(out) >= n or len(seen) > 50 * n:
            break
        tmpl, label = rng.choice(templates)
        pa, pa2 = rng.sample(POS_ADJ, 2)
        na, na2 = rng.sample(NEG_ADJ, 2)
        (nvb, nvp), (pvb, pvp) = rng.choice(NEG_VP), rng.choice(POS_VP)
        if "doesn't" in tmpl or "does {s}" in tmpl or "did not" in tmpl:
            nvp, pvp = nvb, pvb  # after do-support the base form
        text = tmpl.format(s=rng.choice(SUBJECTS), pa=pa, pa2=pa2, na=na, na2=na2,
                           pn=rng.choice(POS_NOUN), nn=rng.choice(NEG_NOUN),
                           pv=rng.choice(POS_VERB), nv=rng.choice(NEG_VERB),
                           nvp=nvp, pvp=pvp, pvp_base=pvb, nvp_base=nvb,
                           fn=rng.choice(NEG_FEEL),
                           fp=rng.choice(POS_FEEL), q=rng.choice(QUALITY))
        text = text[0].upper() + text[1:]
        if text in seen:
            continue
        seen.add(text)
        if not too_close(text, check):
            out.append((text, label))
    return out
