"""Which option letter a model reply names, by VLMEvalKit's exact-matching rules (`can_infer`).

Order, as VLMEvalKit applies it:
1. an API-failure marker gives up on letters (text matching still runs); a refusal phrase gives Z;
2. punctuation `.()[],:;!*#{}` becomes spaces and the reply is split on whitespace; if exactly one
   option letter appears as a token, and its first occurrence is among the last four tokens, it wins;
3. no option letter but a bare `Z` token gives Z;
4. otherwise a phrase like "the answer is **B**" (A-D, any case) gives that letter if it is an option;
5. otherwise option text: if the reply is at most twice as long as all option texts together and
   exactly one option's text (lower-cased) occurs in it, that option;
6. nothing matched: Z.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NO_ANSWER = "Z"
API_FAILURE = "Failed to obtain answer via API"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_PUNCTUATION = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def match_letter(reply: str, choices: Mapping[str, object]) -> str | None:
    """Steps 1-4: an option letter (or Z) named in the reply, else None."""
    if API_FAILURE in reply:
        return None
    if any(phrase in reply for phrase in REFUSALS):
        return NO_ANSWER
    tokens = reply.translate(_PUNCTUATION).split()
    present = [letter for letter in choices if letter in tokens]
    if len(present) == 1:
        letter = present[0]
        if tokens.index(letter) > len(tokens) - 5:
            return letter
    elif not present and NO_ANSWER in tokens:
        return NO_ANSWER
    found = _ANSWER_IS.search(reply)
    if found and found.group(1).upper() in choices:
        return found.group(1).upper()
    return None


def match_text(reply: str, choices: Mapping[str, object]) -> str | None:
    """Step 5: the one option whose text occurs in a reply that is not too long."""
    reply = reply.lower()
    texts = {letter: str(text) for letter, text in choices.items()}
    if len(reply) > 2 * sum(len(t) for t in texts.values()):
        return None
    hits = [letter for letter, text in texts.items() if text.lower() in reply]
    return hits[0] if len(hits) == 1 else None


def extract_option(reply: object, choices: Mapping[str, object]) -> str:
    """The option letter a reply names, or Z. `reply` is stringified as VLMEvalKit does (str(x))."""
    reply = str(reply)
    return match_letter(reply, choices) or match_text(reply, choices) or NO_ANSWER
