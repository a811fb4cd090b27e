"""The stop on degenerate repetition, on its own: what the client receives never holds the same
8 words three times, is always a prefix of what the model wrote, and is untouched when the model
does not loop, however the text is cut into pieces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionary.assistant.enhance import one_message, tidy
from sessionary.providers.llm.repetition import RepetitionGuard, repeated_ngrams


def guarded(text: str, piece: int = 3, size: int = 8, times: int = 3) -> tuple[str, bool, str]:
    guard = RepetitionGuard(size, times)
    released = ""
    for start in range(0, len(text), piece):
        released += guard.feed(text[start : start + piece])
        if guard.stopped:
            break
    released += guard.finish()
    assert released == guard.output
    return released, guard.stopped, guard.text


def test_a_loop_ends_before_its_third_time() -> None:
    loop = "I love this product so much and I will buy it again. "
    text = "Hello there. " + loop * 6
    out, stopped, _ = guarded(text)
    assert stopped
    assert out == "Hello there. " + loop * 2  # the loop twice, then the answer ends
    assert repeated_ngrams(out) == []
    assert repeated_ngrams(text) != []


def test_loops_drifting_in_case_and_punctuation_are_caught() -> None:
    text = "It is great, really great. It is GREAT really great! it is great, really great... " * 3
    out, stopped, _ = guarded(text, piece=5, size=4)
    assert stopped and repeated_ngrams(out, size=4) == []


def test_text_without_a_loop_is_released_whole_and_not_held_back() -> None:
    text = "The quick brown fox jumps over the lazy dog. " + "Then it slept. " * 2
    guard = RepetitionGuard()
    released = guard.feed(text + "End")
    assert released == text.rstrip()  # all but the word still being written
    assert guard.finish() == " End"
    assert not guard.stopped


def test_words_that_may_start_a_third_loop_are_held_until_they_do_not() -> None:
    guard = RepetitionGuard(size=3, times=3)
    assert guard.feed("a b c a b c ") == "a b c a b c "
    # "a b" could be the start of "a b c" a third time: held back...
    assert guard.feed("a b ") == ""
    # ...and released when the next word is not "c".
    assert guard.feed("d ") == "a b d "
    assert not guard.stopped


@given(
    words=st.lists(st.sampled_from(["a", "b", "c", "A.", "b,"]), max_size=80),
    piece=st.integers(min_value=1, max_value=12),
)
def test_released_text_never_repeats_a_run_three_times(words: list[str], piece: int) -> None:
    text = " ".join(words)
    out, stopped, _ = guarded(text, piece=piece, size=4)
    assert text.startswith(out)
    assert repeated_ngrams(out, size=4) == []
    if not stopped:
        assert out == text


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        RepetitionGuard(size=0)
    with pytest.raises(ValueError):
        RepetitionGuard(times=1)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Try our new coffee today! " * 10, "Try our new coffee today!"),
        (
            "Try our new coffee today! Try our new coffee today! Try our",
            "Try our new coffee today!",
        ),
        (
            "Here is a rewritten version:\nBig news: we open Monday. Come!",
            "Big news: we open Monday. Come!",
        ),
        ('"Good shoes, fair prices."', "Good shoes, fair prices."),
        ("First line. Second.\nA second paragraph.", "First line. Second.\nA second paragraph."),
    ],
)
def test_enhance_keeps_one_rewrite(answer: str, expected: str) -> None:
    assert tidy(answer, 120) == expected


def test_enhance_cuts_at_the_word_limit() -> None:
    assert one_message("one two three. four five.") == "one two three. four five."
    assert tidy("one two three four five", 3) == "one two three"
