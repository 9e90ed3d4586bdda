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

``compose`` (``--augment-grammar``) builds sentences from parts instead of frames and
computes each label from them, one flip per negation; see the comment above it.
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


def _from_template(rng: random.Random, templates: list[tuple[str, int]]) -> tuple[str, int]:
    """One template, its slots filled with words drawn from the lists above."""
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
    return text[0].upper() + text[1:], label


def generate(n: int, seed: int = 0, check_set: Path | None = None,
             more: bool = False, grammar: bool = False) -> list[tuple[str, int]]:
    """``n`` distinct (sentence, label) pairs, balanced, none close to the check set
    (``more``: drawn from TEMPLATES and MORE_TEMPLATES; ``grammar``: half of them built
    by ``compose``, and then none close to the validation negation items either, which
    decide between models trained with it)."""
    templates = TEMPLATES + MORE_TEMPLATES if more else TEMPLATES
    from training.evaluate import NEGATION_SET, NEGATION_VAL, load_negation_set

    check = [_words(i["text"]) for i in load_negation_set(check_set or NEGATION_SET)]
    if grammar:
        check += [_words(i["text"]) for i in load_negation_set(NEGATION_VAL)]
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    for _ in itertools.count():
        if len(out) >= n or len(seen) > 50 * n:
            break
        text, label = (compose(rng) if grammar and rng.random() < 0.5
                       else _from_template(rng, templates))
        if text in seen:
            continue
        seen.add(text)
        if not too_close(text, check):
            out.append((text, label))
    return out


# --- Compositional augmentation (``generate(..., grammar=True)``, ``--augment-grammar``) ---
# The templates above are fixed frames: a model can learn each frame's label without
# learning what negation does. Here a sentence is built from parts, and its label is
# computed from them: a polar core (a word that is positive or negative), zero to two
# negations inside the clause ("doesn't", "never", "fails to", "far from", "lacks"),
# zero or one outside it ("i can't say ...", "there wasn't a scene that ..."), each
# flipping the polarity, and contrasts and hedges whose second clause decides. The
# same core appears with every count of negations, so only counting them (their
# scope, not their presence) predicts the label.

# (base, third person, past) of verb phrases about a film or a part of it
G_POS_VP = [("work", "works", "worked"), ("land", "lands", "landed"), ("shine", "shines", "shone"),
            ("pay off", "pays off", "paid off"), ("hold up", "holds up", "held up"),
            ("deliver", "delivers", "delivered"), ("impress", "impresses", "impressed"),
            ("succeed", "succeeds", "succeeded"), ("entertain", "entertains", "entertained"),
            ("grab me", "grabs me", "grabbed me"), ("ring true", "rings true", "rang true"),
            ("charm", "charms", "charmed")]
G_NEG_VP = [("drag", "drags", "dragged"), ("fall flat", "falls flat", "fell flat"),
            ("bore me", "bores me", "bored me"), ("miss the mark", "misses the mark", "missed the mark"),
            ("fall apart", "falls apart", "fell apart"), ("feel forced", "feels forced", "felt forced"),
            ("grate", "grates", "grated"), ("disappoint", "disappoints", "disappointed"),
            ("annoy me", "annoys me", "annoyed me"), ("ring false", "rings false", "rang false"),
            ("flop", "flops", "flopped")]
G_POS_FEEL = ["happy", "satisfied", "entertained", "impressed", "moved", "delighted", "amused"]
G_NEG_FEEL = ["unhappy", "disappointed", "bored", "annoyed", "let down", "cheated", "irritated"]
G_UNITS = ["scene", "moment", "minute", "joke", "performance", "song", "line", "shot",
           "sequence", "episode", "chapter", "stunt", "twist", "character", "set piece"]
G_PEOPLE = ["nobody", "no one", "not one person", "not a single viewer"]
G_FILMS = ["the movie", "this film", "the show", "the sequel", "the series", "the remake",
           "this picture", "it"]
G_QUAL = ["charm", "wit", "heart", "energy", "tension", "humour", "style", "depth", "ideas"]


def _compose_clause(rng: random.Random, pol: int, neg: int) -> str:
    """One clause about a film with polarity ``pol`` (+1/-1) of its core word and ``neg``
    (0, 1 or 2) negations inside it."""
    s = rng.choice(SUBJECTS + ["it"])
    adj = rng.choice(POS_ADJ if pol > 0 else NEG_ADJ)
    vp = rng.choice(G_POS_VP if pol > 0 else G_NEG_VP)
    feel = rng.choice(G_POS_FEEL if pol > 0 else G_NEG_FEEL)
    noun = rng.choice(POS_NOUN if pol > 0 else NEG_NOUN)
    forms = {
        0: [f"{s} is {adj}", f"{s} was {adj}", f"{s} {vp[1]}", f"{s} {vp[2]}",
            f"{s} left me {feel}", f"i came away from {s} {feel}", f"{s} is a {noun}",
            f"{s} turned out {adj}", f"i found {s} {adj}", f"{s} felt {adj}"],
        1: [f"{s} isn't {adj}", f"{s} was not {adj}", f"{s} never {vp[1]}",
            f"{s} doesn't {vp[0]}", f"{s} didn't {vp[0]}", f"{s} fails to {vp[0]}",
            f"{s} failed to {vp[0]}", f"{s} never left me {feel}",
            f"i didn't come away from {s} {feel}",
            f"{s} is no {noun}", f"{s} is far from {adj}", f"{s} is hardly {adj}",
            f"{s} is anything but {adj}", f"i never found {s} {adj}",
            f"{s} didn't leave me {feel}", f"nothing about {s} is {adj}"],
        2: [f"{s} never fails to {vp[0]}", f"{s} never failed to {vp[0]}",
            f"{s} doesn't fail to {vp[0]}", f"{s} isn't without a {adj} streak",
            f"{s} didn't once fail to {vp[0]}", f"i never found {s} anything but {adj}",
            f"{s} is never less than {adj}" if pol > 0 else f"{s} is never anything but {adj}",
            f"nothing about {s} isn't {adj}", f"{s} never stops being {adj}"],
    }
    return rng.choice(forms[neg])


def _compose_unit(rng: random.Random, pol: int, neg: int) -> str:
    """A relative clause about one scene (or joke, song ...): "that worked", "that
    didn't land", "that failed to impress", with ``neg`` (0 or 1) negations."""
    adj = rng.choice(POS_ADJ if pol > 0 else NEG_ADJ)
    vp = rng.choice(G_POS_VP if pol > 0 else G_NEG_VP)
    if neg == 0:
        return rng.choice([f"that {vp[2]}", f"that was {adj}", f"that felt {adj}", f"that {vp[1]}"])
    return rng.choice([f"that didn't {vp[0]}", f"that failed to {vp[0]}", f"that wasn't {adj}",
                       f"that never {vp[1]}", f"that doesn't {vp[0]}", f"that did not feel {adj}"])


def compose(rng: random.Random) -> tuple[str, int]:
    """One sentence and its label (1 positive), built by the grammar above."""
    pol = rng.choice((1, -1))
    kind = rng.random()
    if kind < 0.35:  # a clause with 0-2 inner negations, maybe inside an outer one
        neg = rng.choice((0, 1, 1, 2))
        outer = neg < 2 and rng.random() < 0.45  # no triple negations
        clause = _compose_clause(rng, pol, neg)
        if outer:
            frame = rng.choice(["i can't say {c}", "i wouldn't say {c}", "i don't think {c}",
                                "it's not true that {c}", "no one could claim {c}",
                                "i would never say {c}", "i cannot pretend {c}",
                                "nobody will tell you {c}"])
        else:
            frame = rng.choice(["{c}", "honestly, {c}", "i have to say {c}", "i think {c}",
                                "to be fair, {c}", "{c}, really", "i'd say {c}"])
        label = pol * (-1) ** (neg + outer)
        text = frame.format(c=clause)
    elif kind < 0.65:  # a quantified unit: "there wasn't a scene that didn't work"
        u = rng.choice(G_UNITS)
        inner = rng.choice((0, 1))
        rel = _compose_unit(rng, pol, inner)
        s = rng.choice(G_FILMS)
        quant = rng.choice([  # (frame, negations in it)
            (f"there wasn't a {u} {rel}", 1), (f"there was not a single {u} {rel}", 1),
            (f"i can't think of a {u} {rel}", 1), (f"i couldn't find a {u} in {s} {rel}", 1),
            (f"i can't remember a {u} {rel}", 1), (f"there is no {u} in {s} {rel}", 1),
            (f"every {u} {rel.removeprefix('that ')}", 0),
            (f"{u} after {u} {rel}", 0), (f"there was a {u} {rel}, then another", 0)])
        frame, qneg = quant
        label = pol * (-1) ** (inner + qneg)
        text = frame
    elif kind < 0.75:  # people: "nobody left the theatre unhappy"
        feel = rng.choice(G_POS_FEEL if pol > 0 else G_NEG_FEEL)
        who, qneg = (rng.choice(G_PEOPLE), 1) if rng.random() < 0.6 else (
            rng.choice(["everyone", "the whole audience", "all of us", "my friends"]), 0)
        place = rng.choice(["walked out", "left the theatre", "came away", "went home"])
        text, label = f"{who} {place} {feel}", pol * (-1) ** qneg
    elif kind < 0.8:  # qualities: "it lacks charm" / "it is not without charm"
        q, s = rng.choice(G_QUAL), rng.choice(SUBJECTS + ["it"])
        text, label = rng.choice([(f"{s} lacks {q}", -1), (f"{s} is not without {q}", 1),
                                  (f"{s} has {q} to spare", 1), (f"{s} has no {q}", -1),
                                  (f"{s} never lacks {q}", 1), (f"{s} is short on {q}", -1)])
    else:  # contrast and hedges: the second clause decides
        neg1 = rng.choice((0, 0, 1))
        first = _compose_clause(rng, -pol * (-1) ** neg1, neg1)  # reads the other way
        neg = rng.choice((0, 0, 1, 2))
        second = _compose_clause(rng, pol * (-1) ** neg, neg)
        frame = rng.choice(["{a}, but {b}", "{a}; still, {b}", "although {a}, {b}",
                            "{a} at first, but by the end {b}", "some will say {a}; i'd say {b}",
                            "perhaps {a} for some, but {b}", "sure, {a}, yet {b}",
                            "i expected that {a}, but {b}", "{a}. then again, {b}"])
        text, label = frame.format(a=first, b=second), pol
    text = text[0].upper() + text[1:] + "."
    return text, int(label > 0)
