"""`route explain`'s choice of provider, as a pure function of what the router reports."""

from __future__ import annotations

from shipline.engine.explain import choose
from shipline.providers.router import EntryStatus

GROQ_COOLING = EntryStatus("groq", "llama-3.3", False, "cooling", "3 consecutive failures, 40s")
INHOUSE = EntryStatus("inhouse", "qwen-7b", True, "ready", "")
LOCAL = EntryStatus("local", "smollm2", True, "ready", "")


def test_first_ready_entry_is_chosen_and_the_later_ready_ones_are_its_fallbacks() -> None:
    route = choose("producer", "mid", [INHOUSE, LOCAL])

    assert (route.chosen, route.model, route.fallbacks) == ("inhouse", "qwen-7b", ["local"])
    assert route.reason == "first entry of tier 'mid'"
    assert not route.blocked


def test_a_cooling_entry_is_passed_over_and_the_reason_says_why() -> None:
    route = choose("validator", "cheap", [GROQ_COOLING, INHOUSE, LOCAL])

    assert route.chosen == "inhouse"
    assert route.reason == ("entry 2 of tier 'cheap': groq cooling (3 consecutive failures, 40s)")
    assert route.fallbacks == ["local"]


def test_a_half_open_entry_is_chosen_with_its_trial_call_noted() -> None:
    trial = EntryStatus("groq", "llama-3.3", False, "ready", "half-open: one trial call")

    route = choose("producer", "top", [trial, INHOUSE])

    assert route.chosen == "groq"
    assert route.reason == "first entry of tier 'top'; half-open: one trial call"


def test_nothing_ready_names_every_entry_and_chooses_none() -> None:
    excluded = EntryStatus("openai", "gpt-4o", False, "excluded", "sensitive work: not in_house")

    route = choose("producer", "top", [GROQ_COOLING, excluded])

    assert route.chosen is None and route.fallbacks == []
    assert route.reason == (
        "no entry of tier 'top' can take a call now: groq cooling (3 consecutive failures, "
        "40s), openai excluded (sensitive work: not in_house)"
    )
