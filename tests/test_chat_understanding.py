"""What the chat reads from a message, on the real ML-100K catalogue (no LLM needed): titles with
dots, "and" or twins, negations, refinements that are really title words, and lists an OpenAI
client sends back."""

from types import SimpleNamespace

import numpy as np
import pytest

from itemlm.chat.session import ChatSession
from itemlm.data.item_text import normalize_title
from itemlm.models.catalogue import Catalogue


@pytest.fixture(scope="module")
def session_factory(ml100k):
    catalogue = Catalogue(ml100k.items, [[] for _ in range(ml100k.num_users)], np.zeros((ml100k.num_items, 2), np.float32),
                          np.zeros((ml100k.num_users, 2), np.float32))
    model = SimpleNamespace(catalogue=catalogue)
    first = ChatSession(model)
    return lambda: ChatSession(model, index=first.index)


def titles(session, items) -> list[str]:
    return [session.model.catalogue.titles[i] for i in items]


@pytest.mark.parametrize("message, liked, disliked", [
    ("I loved Heat and hated Casino", ["Heat (1995)"], ["Casino (1995)"]),
    ("I loved Heat, hated Casino", ["Heat (1995)"], ["Casino (1995)"]),
    ("I loved Heat and Casino but not Fargo", ["Heat (1995)", "Casino (1995)"], ["Fargo (1996)"]),
    ("anything but Fargo", [], ["Fargo (1996)"]),
    ("I hated Heat and Casino", [], ["Heat (1995)", "Casino (1995)"]),
    ("I loved L.A. Confidential and Mr. Holland's Opus", ["L.A. Confidential (1997)", "Mr. Holland's Opus (1995)"], []),
    ("I loved Sense and Sensibility", ["Sense and Sensibility (1995)"], []),
    ("I loved Rebel Without a Cause", ["Rebel Without a Cause (1955)"], []),  # a title's words are no negation
])
def test_likes_and_dislikes_are_read_clause_by_clause(session_factory, message, liked, disliked):
    session = session_factory()
    got_liked, got_disliked = session.opinions(message)
    assert set(titles(session, got_liked)) == set(liked) and set(titles(session, got_disliked)) == set(disliked)


def test_an_item_listed_twice_under_one_title_is_liked_shown_and_excluded_as_one(session_factory):
    session = session_factory()
    liked, _ = session.opinions("I loved Chasing Amy")
    assert titles(session, liked) == ["Chasing Amy (1997)", "Chasing Amy (1997)"]  # both catalogue entries
    assert len(set(liked)) == 2 and session.index.twins(liked[0]) == sorted(liked)


@pytest.mark.parametrize("message, expected", [
    ("I loved Swiss Family Robinson", []),  # a title's words are not a request
    ("I recently watched Heat and loved it", []),
    ("something with Warren Beatty", []),  # "war" inside a word is not the War genre
    ("something for the family, less violent", ["nothing violent"]),
    ("more comedy please", ["with comedy"]),
    ("something less childish", ["no children's"]),
    ("nothing too scary, and no romance", ["no horror", "no romance"]),
    ("funnier", ["with comedy"]),
    ("comedy", ["with comedy"]),  # a genre alone is a request for it
    ("something for children", ["with children's"]),  # ("kids" alone is the title Kids (1995))
    ("a good western please", ["with western"]),
    ("not in the mood for a comedy", ["no comedy"]),
    ("I watched it with my kids", []),  # a plain mention is no request
    ("some science fiction", ["with sci-fi"]),
])
def test_refinements_come_from_the_words_around_titles(session_factory, message, expected):
    session = session_factory()
    session.like(session.find_titles("Heat")[0])
    assert session.refine(message) == expected


def test_a_conversation_sent_back_by_a_client_keeps_what_was_listed_as_shown(session_factory):
    session = session_factory()
    session.absorb([
        {"role": "user", "content": "I loved Toy Story"},
        {"role": "assistant", "content": "You liked Toy Story (1995).\n1. Aladdin (1992) — because it is also a comedy.\n2. Ice Storm, The (1997)."},
        {"role": "user", "content": "more comedy"},
    ])
    assert set(titles(session, session.shown)) == {"Aladdin (1992)", "Ice Storm, The (1997)"}
    assert len(session.shown) == 3  # the Ice Storm is listed twice in the catalogue: both count as shown
    assert titles(session, session.prefs.liked) == ["Toy Story (1995)"] and "comedy" in session.prefs.want_tags


def test_less_of_a_genre_undoes_more_of_it_and_the_other_way_round(session_factory):
    session = session_factory()
    session.refine("more horror")
    assert session.prefs.want_tags == {"horror"} and not session.prefs.avoid_tags
    session.refine("less scary")
    assert session.prefs.avoid_tags == {"horror"} and not session.prefs.want_tags


@pytest.fixture(scope="module")
def watched_session(ml100k):
    """A session whose catalogue knows how often each item was watched (no LLM: nothing here generates)."""
    histories = ml100k.interactions.groupby("user")["item"].apply(list).tolist()
    catalogue = Catalogue(ml100k.items, histories, np.zeros((ml100k.num_items, 2), np.float32), np.zeros((ml100k.num_users, 2), np.float32))
    model = SimpleNamespace(catalogue=catalogue)
    return lambda: ChatSession(model, k=3)


def test_a_request_before_any_title_gets_the_most_watched_items_that_fit_said_to_be_that(watched_session, ml100k):
    session = watched_session()
    reply = session.respond("a comedy, please")
    counts = ml100k.interactions["item"].value_counts()
    comedies = [i for i in counts.index if "comedy" in session.tags[i]]
    assert reply.kind == "recommendations" and [r.item for r in reply.items] == comedies[:3]
    assert "most watched" in reply.text and "Keeping to: with comedy." in reply.text
    again = session.respond("something else")  # the next three, none repeated
    assert [r.item for r in again.items] == comedies[3:6]
    assert session.respond("hello").kind == "unknown"
    noted = session.respond("I hated Heat")
    assert noted.kind == "help" and noted.text.startswith("Noted: not Heat (1995).") and not noted.items


def test_any_message_is_read_without_error_and_never_both_ways(session_factory):
    """Messages built from titles, genre words and cue words in any order: the reading never raises,
    no item is both liked and disliked, no genre both wanted and avoided."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    words = ["Heat", "Casino", "Toy Story", "Kids", "Scream", "Sense and Sensibility", "L.A. Confidential", "more", "less",
             "no", "not", "but", "and", "I", "loved", "hated", "didn't like", "something", "funny", "scary", "childish",
             "comedy", "horror", "please", "too", "a", "newer", "older", "violent", ",", ".", "?", "what is", "about",
             "anything but", "é", "\u200b", "sci-fi", "science fiction", "without", "the", "romantic", "kids"]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.sampled_from(words), max_size=12))
    def read(parts):
        session = session_factory()
        text = " ".join(parts)
        liked, disliked = session.opinions(text)
        assert not set(liked) & set(disliked)
        session.asks_about(text)
        session.refine(text)
        assert not session.prefs.want_tags & session.prefs.avoid_tags

    read()


def test_the_second_one_and_number_3_stand_for_items_of_the_last_list_and_why_repeats_its_reason(session_factory):
    session = session_factory()
    heat, casino, fargo = (session.find_titles(t)[0] for t in ("Heat", "Casino", "Fargo"))
    listed = [{"item": i, "reason": f"{session.model.catalogue.titles[i]} — because it is also a crime film."} for i in (heat, casino, fargo)]
    session.turns = [{"role": "user", "content": "I loved Scream"}, {"role": "assistant", "content": "...", "items": listed}]
    assert session.resolve_references("what is the second one about?") == "what is Casino (1995) about?"
    assert session.asks_about(session.resolve_references("tell me about #3")) == fargo
    liked, disliked = session.opinions(session.resolve_references("I liked the first one but not the last one"))
    assert (liked, disliked) == ([heat], [fargo])
    assert session.resolve_references("the fifth one") == "the fifth one"  # the list had three
    assert session.resolve_references("I loved Heat and #2") == "I loved Heat and #2"  # beside a title, "#2" may be part of one
    reply = session.respond("why the third one?")
    assert reply.kind == "reason" and reply.about == fargo and reply.text == listed[2]["reason"]
    scream = session.find_titles("Scream")[0]
    why_not = session.respond("why not Scream?")  # not listed: said so, no reason invented for it
    assert why_not.kind == "reason" and why_not.about == scream and why_not.text.startswith("I did not list Scream (1996)")


def test_references_read_a_list_that_a_client_sent_back_as_text(session_factory):
    session = session_factory()
    session.absorb([{"role": "user", "content": "I loved Scream"},
                    {"role": "assistant", "content": "1. Heat (1995) — because it is a crime film.\n2. Fargo (1996) — because ..."}])
    assert session.resolve_references("I liked number 2") == "I liked Fargo (1996)"


def test_reading_a_message_by_its_words_finds_what_a_pass_over_every_name_finds(session_factory):
    """`TitleIndex.read` checks only the names whose first word the message holds; on messages
    built from catalogue titles, their pieces and filler it must agree with the plain pass over
    every name, longest first."""
    index = session_factory().index

    def every_name(text):
        normalized = f" {normalize_title(text)} "
        found = []
        for name in index.names:
            if len(name) >= 3 and f" {name} " in normalized:
                found.append(index.by_name[name][0])
                normalized = normalized.replace(f" {name} ", " | ")
        return list(dict.fromkeys(twin for item in found for twin in index.twins(item))), normalized

    rng = np.random.default_rng(0)
    titles_ = index.titles
    filler = ["i loved", "and", "but not", "the", "more comedy", "war", "star", "of", "a", "night", "2", "ii"]
    for _ in range(300):
        pieces = []
        for _ in range(rng.integers(1, 6)):
            title = titles_[rng.integers(len(titles_))].rsplit(" (", 1)[0]
            words = title.split()
            cut = rng.integers(1, len(words) + 1) if rng.random() < 0.3 else len(words)  # a title's first words alone
            pieces += [" ".join(words[:cut]), filler[rng.integers(len(filler))]]
        text = " ".join(pieces)
        assert index.read(text) == every_name(text), text
