"""StopMatcher alone: what of a stream's text may be released, and when it stops."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.stopping import StopMatcher


def feed(m: StopMatcher, pieces) -> tuple[list[str], str | None]:
    """Push pieces until the matcher ends the stream: (released pieces, reason)."""
    released = []
    for p in pieces:
        text, reason = m.push(p)
        released.append(text)
        if reason is not None:
            return released, reason
    return released, None


def test_without_stops_every_character_is_released_at_once_and_length_ends_it():
    m = StopMatcher((), max_new=3)
    assert [m.push(c) for c in "abc"] == [("a", None), ("b", None), ("c", "length")]
    assert m.released == 3 and m.n == 3


def test_text_that_could_start_a_stop_is_held_back_until_it_cannot():
    m = StopMatcher(["the end"])
    assert m.push("x") == ("x", None)
    assert m.push("t") == ("", None) and m.held == "t"
    assert m.push("h") == ("", None) and m.held == "th"
    assert m.push("o") == ("tho", None) and m.held == ""  # "tho" starts no stop


def test_a_stop_sequence_never_reaches_the_caller():
    released, reason = feed(StopMatcher(["the"]), "a theme")
    assert reason == "stop" and "".join(released) == "a "


def test_a_stop_that_spans_pieces_of_several_characters():
    # the engine pushes one character at a time, but a piece may be longer
    released, reason = feed(StopMatcher(["stop"]), ["go st", "o", "p!"])
    assert reason == "stop" and "".join(released) == "go "  # what follows it goes too
    released, reason = feed(StopMatcher(["stop"]), ["xs", "topper"])
    assert reason == "stop" and released == ["x", ""]
    # of two stops in one piece, the one that completes first
    released, reason = feed(StopMatcher(["cd", "ab"]), ["x", "abcd"])
    assert reason == "stop" and "".join(released) == "x"
    released, reason = feed(StopMatcher(["abc", "b"]), ["x", "abc"])
    assert reason == "stop" and "".join(released) == "xa"


def test_overlapping_occurrences_of_a_stop():
    released, reason = feed(StopMatcher(["aab"]), "xaaab")
    assert reason == "stop" and "".join(released) == "xa"
    m = StopMatcher(["abab"])
    released, reason = feed(m, "abaaba")  # the last "aba" may still become "abab"
    assert reason is None and "".join(released) == "aba" and m.held == "aba"
    assert m.push("b") == ("", "stop")


def test_a_stop_that_is_a_prefix_of_another_wins_as_soon_as_it_completes():
    for stops in (["ab", "abc"], ["abc", "ab"]):
        released, reason = feed(StopMatcher(stops), "xabc")
        assert reason == "stop" and "".join(released) == "x", stops


def test_stops_that_end_at_the_same_place_the_first_given_wins():
    released, _ = feed(StopMatcher(["bc", "abc"]), "xabc")
    assert "".join(released) == "xa"
    released, _ = feed(StopMatcher(["abc", "bc"]), "xabc")
    assert "".join(released) == "x"


def test_held_back_text_is_released_at_a_length_finish():
    m = StopMatcher(["the end"], max_new=5)
    released, reason = feed(m, "xthe e")
    assert reason == "length" and released == ["x", "", "", "", "the "]
    assert m.held == "" and m.released == 5


def test_a_stop_is_checked_before_the_length_limit():
    released, reason = feed(StopMatcher(["ab"], max_new=3), "xab")
    assert reason == "stop" and "".join(released) == "x"


def test_unicode_stops_and_text():
    released, reason = feed(StopMatcher(["é!", "🙂"]), "ça é? oui é!")
    assert reason == "stop" and "".join(released) == "ça é? oui "
    released, reason = feed(StopMatcher(["Straße"]), list("die straße, die Straße"))
    assert reason == "stop" and "".join(released) == "die straße, die "
    released, reason = feed(StopMatcher(["\n\n"]), ["ein", "\n", "zwei", "\n", "\n", "drei"])
    assert reason == "stop" and "".join(released) == "ein\nzwei"


def _reference(text: str, stops: list[str], max_new: int) -> tuple[str, str | None, list[int]]:
    """The engine's algorithm before StopMatcher (the whole text kept, one character
    at a time): the final text, the reason and how much was released after each step."""
    out, releases = "", []
    for n, ch in enumerate(text, 1):
        out += ch
        for s in stops:
            if out.endswith(s):
                releases.append(len(out) - len(s))
                return out[: len(out) - len(s)], "stop", releases
        if n >= max_new:
            releases.append(len(out))
            return out, "length", releases
        hold = max((k for s in stops for k in range(1, len(s)) if out.endswith(s[:k])),
                   default=0)
        releases.append(len(out) - hold)
    return out, None, releases


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="abé🙂 ", max_size=40),
       stops=st.lists(st.text(alphabet="abé🙂 ", min_size=1, max_size=5), max_size=4),
       max_new=st.integers(1, 50))
def test_releases_exactly_what_the_whole_text_algorithm_released(text, stops, max_new):
    m = StopMatcher(stops, max_new)
    released, total = [], 0
    reason = None
    for ch in text:
        piece, reason = m.push(ch)
        total += len(piece)
        released.append(total)
        if reason is not None:
            break
    want_text, want_reason, want_releases = _reference(text, stops, max_new)
    assert reason == want_reason
    assert released == want_releases
    got = text[: released[-1]] if released else ""
    if reason is not None:
        assert got == want_text and m.released == len(want_text)
    # no stop sequence is ever part of what was released
    assert not any(s in got for s in stops)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="abé ", max_size=30),
       stops=st.lists(st.text(alphabet="abé ", min_size=1, max_size=4), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_pieces_of_several_characters_stop_where_single_characters_do(text, stops, cuts):
    def run(pieces):
        m = StopMatcher(stops)
        released, reason = feed(m, pieces)
        return "".join(released) + ("" if reason else m.held), reason

    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    assert run(pieces) == run(list(text))


def test_min_new_lets_no_stop_end_the_text_before_it():
    m = StopMatcher(["b"], max_new=20, min_new=4)
    released, reason = feed(m, "abababab")
    # the stops completing at the 2nd character is passed over; the one at the 4th ends it
    assert "".join(released) == "aba" and reason == "stop"
    m = StopMatcher(["ab"], max_new=20, min_new=3)
    released, reason = feed(m, "abxab")  # "ab" completes at 2 (too early), then at 5
    assert "".join(released) == "abx" and reason == "stop"
    m = StopMatcher(["b"], max_new=3, min_new=3)
    released, reason = feed(m, "bbbb")
    assert "".join(released) == "bb" and reason == "stop"  # the stop at 3 counts
