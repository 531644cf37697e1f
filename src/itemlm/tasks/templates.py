"""Stage-2 prompt templates: several phrasings per task, one of them kept for evaluation only.

A prompt names items and users with placeholders, `<item:12>` and `<user:3>` (dataset indices);
the model replaces each one with the adapter's output vectors for that item's or user's CF
embedding. A template's text has format fields that the sample builder fills with placeholders:
`{item}`, `{user}`, `{history}` (comma-separated, oldest first) and `{liked}` ("a, b and c").

Every task has exactly one `held_out` phrasing per domain. Training never reads it; evaluating
with it measures whether the model follows an instruction it has not seen ("unseen prompt").
Neutral phrasings say "item"; a few are movie- or product-flavoured (`domain`). Seven seen
phrasings per task and domain: with three, the model learned the phrasings rather than the tasks
(the held-out "profile of the person" was answered as a film biography).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TASKS = (
    "item_title",
    "item_genres",
    "item_description",
    "item_pitch",
    "user_profile",
    "sequential",
    "straightforward",
    "conversational",
)
ITEM_TASKS = ("item_title", "item_genres", "item_description", "item_pitch")
"""Item -> text: the prompt holds one item placeholder, the target is text about that item."""
USER_TASKS = ("user_profile",)
REC_TASKS = ("sequential", "straightforward", "conversational")
"""Recommendation: the target names an item to recommend (`Sample.target_item`)."""
EXTRA_TASKS = ("explanation",)
"""Tasks beyond the paper's eight, trained and evaluated only when a mixture weighs them.
explanation: why an item suits someone who liked others ("Because it is also a crime film."),
the item given as vectors, so the reason is read from them (the chat's "why")."""
ALL_TASKS = (*TASKS, *EXTRA_TASKS)
TRAINING_TASKS = (*ALL_TASKS, "ranking")
"""What a stage-2 mixture can weigh: the templated tasks plus ranking mode (`itemlm.rank`)."""

DOMAINS = ("movies", "products")
PROMPT_SETS = ("seen", "unseen", "all")

ITEM_TOKEN_PATTERN = re.compile(r"<(item|user):(\d+)>")
"""Matches `<item:INDEX>` and `<user:INDEX>`; group 1 is the kind, group 2 the index."""


def item_placeholder(item: int) -> str:
    return f"<item:{int(item)}>"


def user_placeholder(user: int) -> str:
    return f"<user:{int(user)}>"


def find_placeholders(text: str) -> list[tuple[str, int, int, int]]:
    """(kind, index, start, end) for every placeholder in `text`, left to right."""
    return [(m.group(1), int(m.group(2)), m.start(), m.end()) for m in ITEM_TOKEN_PATTERN.finditer(text)]


@dataclass(frozen=True)
class Template:
    """One phrasing of a task. `domain` None: used for every domain."""

    task: str
    name: str
    text: str
    held_out: bool = False
    domain: str | None = None

    def fill(self, **fields: str) -> str:
        return self.text.format(**fields)


def _task_templates(task: str, neutral: list[str], movies: str, products: str, held_out: str) -> list[Template]:
    templates = [Template(task, f"{task}.{n}", text) for n, text in enumerate(neutral)]
    templates.append(Template(task, f"{task}.movies", movies, domain="movies"))
    templates.append(Template(task, f"{task}.products", products, domain="products"))
    templates.append(Template(task, f"{task}.held_out", held_out, held_out=True))
    return templates


TEMPLATES: tuple[Template, ...] = tuple(
    _task_templates("item_title", [
        "What is the title of {item}?",
        "{item} -- what is this item called?",
        "Name the item {item}.",
        "What is {item} called?",
        "Identify {item}: what is it?",
        "Give me the title of {item}.",
    ],
        movies="Which movie is {item}? Give its title.",
        products="Which product is {item}? Give its name.",
        held_out="Tell me the name of {item}, please.",
    )
    + _task_templates("item_genres", [
        "What genres or categories does {item} belong to?",
        "List the categories of {item}.",
        "How would you categorize {item}?",
        "Which genres fit {item}?",
        "Classify {item} by category.",
        "What kind of item is {item}, by genre?",
    ],
        movies="What genre of film is {item}?",
        products="Which product categories is {item} listed under?",
        held_out="Into which categories would you file {item}?",
    )
    + _task_templates("item_description", [
        "Describe {item}.",
        "Give a description of {item}.",
        "What is {item} about?",
        "Tell me about {item}.",
        "Write a short description of {item}.",
        "Explain what {item} is.",
    ],
        movies="What is the movie {item} about? Describe it.",
        products="What does the product description of {item} say?",
        held_out="Write the description that goes with {item}.",
    )
    + _task_templates("item_pitch", [
        "Pitch {item} in one sentence.",
        "Introduce {item} briefly.",
        "In one sentence, what kind of item is {item}?",
        "Why would someone pick {item}? One line.",
        "Sum up {item} in a sentence.",
        "Give me a one-line introduction to {item}.",
    ],
        movies="Sell me on the movie {item} in a sentence.",
        products="Give a one-line sales pitch for {item}.",
        held_out="Summarize what {item} is in a single line.",
    )
    + _task_templates("user_profile", [
        "Describe the taste of user {user}.",
        "What does {user} like?",
        "Summarize the preferences of {user}.",
        "Tell me about the person {user}.",
        "Profile {user} in a sentence.",
        "Who is {user}, judging by what they chose?",
        "What is {user} into?",
        "Sketch the taste of {user} in a few words.",
        "How would you characterise {user} from their choices?",
    ],
        movies="What kind of movies does {user} watch?",
        products="What kind of products does {user} buy?",
        held_out="Give a short profile of the person {user}.",
    )
    + _task_templates("sequential", [
        "A user interacted with these items in order: {history}. What comes next?",
        "History: {history}. Predict the next item.",
        "Given the sequence {history}, which item will the user choose next?",
        "Someone chose {history}, one after another. What do they pick next?",
        "Next after {history}?",
        "The last choices were {history}. Which item follows?",
    ],
        movies="I watched {history}, in that order. What will I watch next?",
        products="I bought {history}, in that order. What will I buy next?",
        held_out="After {history}, what is the most likely next pick?",
    )
    + _task_templates("straightforward", [
        "Recommend an item for {user}.",
        "What should {user} try next?",
        "Which item would {user} like?",
        "Suggest something for {user}.",
        "What would you recommend to the person {user}?",
        "Give {user} one recommendation.",
    ],
        movies="Pick a movie for {user}.",
        products="Pick a product for {user}.",
        held_out="Suggest one thing that {user} would enjoy.",
    )
    + _task_templates("conversational", [
        "I really liked {liked}. What else would I like?",
        "Can you recommend something similar to {liked}?",
        "Based on {liked}, what do you recommend?",
        "Fans of {liked} also like what?",
        "I enjoyed {liked}. Any recommendation?",
        "What goes well with {liked}?",
    ],
        movies="I loved {liked}; what should I watch next?",
        products="I loved {liked}; what should I buy next?",
        held_out="My favourites lately: {liked}. Any suggestion?",
    )
    + _task_templates("explanation", [
        "I liked {liked}. Why would I like {item}?",
        "Why recommend {item} to someone who enjoyed {liked}?",
        "What makes {item} a good pick after {liked}?",
        "I enjoyed {liked}. What would I like about {item}?",
        "Fans of {liked}: why try {item}?",
        "Explain why {item} suits a fan of {liked}.",
    ],
        movies="I loved {liked}; why should I watch {item}?",
        products="I loved {liked}; why should I buy {item}?",
        held_out="Given that {liked} were favourites, what speaks for {item}?",
    )
)


def templates_for(task: str, domain: str, prompts: str = "all") -> list[Template]:
    """The phrasings of `task` for `domain`: "seen" (training ones), "unseen" (the held-out one) or "all"."""
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task '{task}'; tasks are {', '.join(ALL_TASKS)}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain '{domain}'; expected one of {', '.join(DOMAINS)}")
    if prompts not in PROMPT_SETS:
        raise ValueError(f"prompts must be one of {', '.join(PROMPT_SETS)}, got '{prompts}'")
    chosen = [t for t in TEMPLATES if t.task == task and t.domain in (None, domain)]
    if prompts == "seen":
        return [t for t in chosen if not t.held_out]
    if prompts == "unseen":
        return [t for t in chosen if t.held_out]
    return chosen


_MOVIE_NAME = re.compile(r"(^|[^a-z])(ml|movielens|movies?|netflix|imdb)([^a-z]|$)", re.IGNORECASE)


def infer_domain(dataset) -> str:
    """"movies" or "products": by the dataset name first (ml-*, movielens, netflix), then by its
    item table (Amazon-style category lists mean products; a year on most items means movies)."""
    if _MOVIE_NAME.search(dataset.name or ""):
        return "movies"
    items = dataset.items
    if len(items) == 0:
        return "products"

    def filled(column: str) -> bool:
        return column in items and float((items[column].astype(str).str.len() > 0).mean()) > 0.5

    if filled("categories") or filled("brand"):
        return "products"
    return "movies" if filled("year") else "products"
