from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from query.text import tokens


def test_splits_on_punctuation_and_lowercases() -> None:
    assert tokens("Acer rubrum L., 1753 (Red maple)") == [
        "acer",
        "rubrum",
        "l",
        "1753",
        "red",
        "maple",
    ]


def test_tokens_are_distinct_in_first_seen_order() -> None:
    assert tokens("Smith, J.; smith j") == ["smith", "j"]


def test_unicode_words_and_underscores() -> None:
    assert tokens("Río_Negro São-Paulo 北京") == ["río", "negro", "são", "paulo", "北京"]


def test_composed_and_decomposed_accents_give_the_same_token() -> None:
    decomposed = unicodedata.normalize("NFD", "García")
    assert tokens(decomposed) == tokens("García") == ["garcía"]


def test_no_words() -> None:
    assert tokens(" ,.;- ") == []


@given(st.text())
def test_tokens_of_tokens_are_stable(text: str) -> None:
    words = tokens(text)
    assert len(set(words)) == len(words)
    assert tokens(" ".join(words)) == words
