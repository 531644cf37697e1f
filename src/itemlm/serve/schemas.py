"""Request and response bodies of `itemlm serve`, with their limits.

Chat completions follow the OpenAI chat schema (unknown fields such as `temperature` are accepted
and ignored, so existing clients work); `session_id` is this server's addition, and answers carry
the recommended items as data under `itemlm`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from itemlm.tasks.templates import find_placeholders

MAX_MESSAGE_CHARS = 4000
MAX_MESSAGES = 100
MAX_HISTORY = 200
MAX_EXCLUDE = 2000
MAX_K = 50
MAX_NEW_TOKENS = 256
MAX_PLACEHOLDERS = 50  # <item:N> / <user:N> in one recommendation text (each becomes several vectors, or titles)
SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ItemId = str  # the dataset's own item id ("1", "B000052YJM"), as /v1/items lists it


def encodable(text: str | None) -> bool:
    """Whether the text is Unicode the tokenizer can take: JSON's "\\ud800" escapes a lone surrogate, which is not."""
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_unicode(text: str | None) -> None:
    if not encodable(text):
        raise ValueError("the text holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair), which is not Unicode")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(part.text for part in self.content)
        return self.content or ""

    @model_validator(mode="after")
    def fits(self):
        if len(self.text()) > MAX_MESSAGE_CHARS:  # a list of parts counts as the text it joins to
            raise ValueError(f"a message is longer than {MAX_MESSAGE_CHARS} characters")
        require_unicode(self.text())
        return self


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    session_id: str | None = Field(default=None, pattern=SESSION_PATTERN,
                                   description="Continue a stored conversation; omit it to start one (the answer gives its id).")
    k: int = Field(default=5, ge=1, le=20, description="Items per recommendation list.")

    @model_validator(mode="after")
    def last_message_is_the_users(self):
        if self.messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        if len(self.messages[-1].text()) > MAX_MESSAGE_CHARS:
            raise ValueError(f"the last message is longer than {MAX_MESSAGE_CHARS} characters")
        return self


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[ItemId] | None = Field(default=None, min_length=1, max_length=MAX_HISTORY,
                                         description="Item ids the person consumed, oldest first.")
    user: int | None = Field(default=None, ge=0, description="A user of the training data, by index.")
    text: str | None = Field(default=None, min_length=1, max_length=MAX_MESSAGE_CHARS,
                             description="A free-text request; <item:N> placeholders allowed.")
    k: int = Field(default=10, ge=1, le=MAX_K)
    exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_EXCLUDE)
    reasons: bool = Field(default=True, description="Generate a reason for each item (slower).")
    mode: Literal["auto", "rank", "generate"] = "auto"

    @model_validator(mode="after")
    def exactly_one_subject(self):
        given = [name for name in ("history", "user", "text") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of history, user, text (got {', '.join(given) or 'none'})")
        require_unicode(self.text)
        if self.text and len(find_placeholders(self.text)) > MAX_PLACEHOLDERS:
            raise ValueError(f"text names more than {MAX_PLACEHOLDERS} items and users (<item:N>, <user:N>)")
        return self


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: ItemId
    liked: bool


class Item(BaseModel):
    id: ItemId
    title: str
    year: str | None = None
    tags: list[str] = Field(default_factory=list, description="Genres or categories.")
    score: float | None = None
    reason: str | None = None


class ItemDetail(Item):
    description: str | None = Field(default=None, description="The catalogue's own text, where it has one.")
    model_description: str | None = Field(default=None, description="What the model says the item is about.")
    model_read_text: bool = Field(default=True, description=(
        "Whether the model's training read this item's text; when not, model_description is the genres the model "
        "reads from the item's CF vector, a guess from how people use it."))


class Recommendations(BaseModel):
    items: list[Item]
    mode: str


class SessionView(BaseModel):
    session_id: str
    turns: list[dict]
    liked: list[Item]
    disliked: list[Item]
    constraints: list[str]
