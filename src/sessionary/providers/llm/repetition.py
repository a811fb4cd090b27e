"""A stop for degenerate repetition, the failure mode of very small models.

A small model that loses the thread repeats itself: the same sentence again and again until the
output cap. A repetition penalty makes that rarer but cannot forbid it, so the generation is also
watched as a reader would see it: as words. When a run of `size` words is about to appear for the
`times`-th time, the generation stops and the answer ends before that run, so no run of `size`
words appears `times` times in what the client receives.

Words are compared case-folded and without surrounding punctuation, because loops drift in both
("It is great. It is great, it is great!"). The guard holds back only the words that could still
turn out to start a third occurrence, so a stream that is not looping is not delayed.
"""

from __future__ import annotations

import re
import string
from collections import Counter

WORD = re.compile(r"\S+")
PUNCTUATION = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026\u2014\u2013"


def normalise(word: str) -> str:
    folded = word.casefold()
    return folded.strip(PUNCTUATION) or folded


def repeated_ngrams(text: str, size: int = 8, times: int = 3) -> list[tuple[str, ...]]:
    """Runs of `size` words that occur at least `times` times in a text (the guard's measure)."""
    words = [normalise(w) for w in WORD.findall(text)]
    counts = Counter(tuple(words[i : i + size]) for i in range(len(words) - size + 1))
    return [gram for gram, count in counts.items() if count >= times]


class RepetitionGuard:
    """Fed the generated text piece by piece; hands back what may be released to the client."""

    def __init__(self, size: int = 8, times: int = 3) -> None:
        if size < 1 or times < 2:
            raise ValueError("size must be >= 1 and times >= 2")
        self.size = size
        self.times = times
        self.text = ""
        self.released = 0  # self.text[:released] has been handed out
        self.scanned = 0  # words ending before this offset have been counted
        self.words: list[str] = []
        self.starts: list[int] = []  # offset in self.text of each counted word
        self.counts: Counter[tuple[str, ...]] = Counter()
        self.last_chance: set[tuple[str, ...]] = set()  # prefixes of runs seen times-1 times
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add generated text; return the text that is now safe to release ('' once stopped)."""
        if self.stopped:
            return ""
        self.text += piece
        for match in WORD.finditer(self.text, self.scanned):
            if match.end() == len(self.text):
                break  # the word may still be growing
            if self._count(match.group(), match.start()):
                return self._stop()
            self.scanned = match.end()
        return self._release(self._held_from())

    def finish(self) -> str:
        """The generation ended: count the last word and release the rest."""
        if self.stopped:
            return ""
        for match in WORD.finditer(self.text, self.scanned):
            if self._count(match.group(), match.start()):
                return self._stop()
        self.scanned = len(self.text)
        return self._release(len(self.text))

    @property
    def output(self) -> str:
        """Everything released so far: the answer the client sees."""
        return self.text[: self.released]

    def _count(self, word: str, start: int) -> bool:
        """Count one completed word; True when it completes a run seen `times` times."""
        self.words.append(normalise(word))
        self.starts.append(start)
        if len(self.words) < self.size:
            return False
        gram = tuple(self.words[-self.size :])
        self.counts[gram] += 1
        if self.counts[gram] >= self.times:
            return True
        if self.counts[gram] == self.times - 1:
            self.last_chance.update(gram[:k] for k in range(1, self.size))
        return False

    def _held_from(self) -> int:
        """Where the words that might begin a looping run start (release stops there)."""
        held = self.scanned
        for k in range(1, min(self.size, len(self.words) + 1)):
            if tuple(self.words[-k:]) in self.last_chance:
                held = self.starts[-k]
        # The word still being written is held too.
        for match in WORD.finditer(self.text, self.scanned):
            return min(held, match.start())
        return held if held < self.scanned else len(self.text)

    def _stop(self) -> str:
        self.stopped = True
        cut = self.starts[-self.size]
        end = len(self.text[:cut].rstrip())
        return self._release(max(end, self.released))

    def _release(self, upto: int) -> str:
        if upto <= self.released:
            return ""
        piece = self.text[self.released : upto]
        self.released = upto
        return piece
