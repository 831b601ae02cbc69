"""A version's description keeps its history within what MLflow's SQL stores hold."""

from __future__ import annotations

import random
import re

from rankflow.registry.versions import DESCRIPTION_LIMIT, HISTORY, with_note

CARD = "**DCN** click-through-rate model (rankflow)\n\nTest metrics: AUC 0.72, logloss 0.17"


def _notes(text: str) -> list[str]:
    return [line[2:] for line in text.split(HISTORY, 1)[1].splitlines() if line.startswith("- ")]


def test_a_note_is_appended_under_the_history_heading_after_the_card() -> None:
    text = with_note(CARD, "became @champion: canary promoted it")
    assert text.startswith(CARD)
    assert _notes(text) == ["became @champion: canary promoted it"]
    again = with_note(text, "canary rejected_gates: v7 failed the quality gates")
    assert _notes(again) == [
        "became @champion: canary promoted it",
        "canary rejected_gates: v7 failed the quality gates",
    ]
    assert "not shown" not in again


def test_a_year_of_canaries_stays_within_the_limit_and_keeps_the_newest_lines() -> None:
    rng = random.Random(3)
    text, written = CARD, []
    for run in range(400):
        note = f"canary run {run}: " + "x" * rng.randint(20, 400)
        written.append(note)
        text = with_note(text, note)
        assert len(text) <= DESCRIPTION_LIMIT, run
    kept = _notes(text)
    assert kept == written[-len(kept) :]  # the newest, in order
    shown = re.search(r"_(\d+) earlier entries not shown", text)
    assert shown is not None and int(shown.group(1)) + len(kept) == len(written)
    assert text.startswith(CARD)


def test_an_oversized_card_or_note_is_cut_not_refused() -> None:
    text = with_note("c" * 9000, "n" * 9000)
    assert len(text) <= DESCRIPTION_LIMIT
    assert text.startswith("ccc") and _notes(text)[0].startswith("nnn")
    assert with_note("", "first")  # no card: the history alone


def test_a_long_note_keeps_its_start_and_the_run_it_names() -> None:
    note = "canary promoted: " + "r" * 3000 + " (canary run `abc123`)"
    text = with_note(CARD, note)
    (kept,) = _notes(text)
    assert kept.startswith("canary promoted: rrr") and kept.endswith("(canary run `abc123`)")
    assert len(kept) < 1000
