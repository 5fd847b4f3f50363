"""Speaker indexing and the text prompt of MAGTKD.

Speaker modes
-------------
* ``"first_appearance"`` (default): per conversation, speakers are numbered 0, 1, 2, ... in
  the order they first speak.
* ``"global_map"``: a fixed name -> id map (the released MELD ``speaker2id.json``); ids of 9
  and more are written ``<s10>``, ``<s42>``... which are not speaker tokens, so they become
  ordinary sub-words, exactly as in the released MELD scripts.
* ``"released_iemocap"``: the released IEMOCAP preprocessing. It reads the split file in
  order with one running speaker list and resets that list only *after* indexing the first
  utterance of each new dialogue. Hence the first utterance of every dialogue but the first
  is indexed in the previous dialogue's list (with its speaker appended if absent), and the
  rest of the dialogue in a fresh first-appearance list that does not contain that first
  utterance. Reproducing it needs, for each conversation, the running list as the previous
  conversation of the split (in the release's file order) left it: see
  `released_iemocap_speaker_indices` and `released_iemocap_previous_speakers`.

Prompt (for utterance i)::

    "<s{k_1}> u_1 <s{k_2}> u_2 ... <s{k_i}> u_i {sep} Now<s{k_i}> feels"

tokenized without special tokens, the last 511 tokens kept, the mask token appended. `{sep}` is the
tokenizer's separator token (`prompt_separator`): `</s>` for RoBERTa, as in the released scripts,
`[SEP]` for a BERT-family tokenizer. The "released" tokenization mode always writes `</s>`.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

SPEAKER_TOKENS = tuple(f"<s{k}>" for k in range(1, 10))
MAX_SPEAKERS = len(SPEAKER_TOKENS)
SPEAKER_MODES = ("first_appearance", "global_map", "released_iemocap")
TOKENIZATION_MODES = ("default", "released")
TEXT_CONTEXTS = ("history", "utterance")  # the prompt holds the conversation so far, or the utterance alone
RELEASED_SEPARATOR = "</s>"  # RoBERTa's sep token, written literally by the released scripts


class MagtkdInputError(ValueError):
    """Bad processor input; the message names the conversation, the utterance and the file."""


# --------------------------------------------------------------------------------------
# Speakers
# --------------------------------------------------------------------------------------


def first_appearance_indices(speakers: Sequence[str]) -> list[int]:
    """Speaker names -> 0, 1, 2, ... in order of first appearance."""
    order: dict[str, int] = {}
    return [order.setdefault(name, len(order)) for name in speakers]


def global_map_indices(speakers: Sequence[str], speaker_map: Mapping[str, int]) -> list[int]:
    """Speaker names -> ids of a global map. Raises KeyError naming the unknown speaker."""
    indices = []
    for name in speakers:
        if name not in speaker_map:
            raise KeyError(name)
        indices.append(int(speaker_map[name]))
    return indices


def released_iemocap_speaker_indices(
    speakers: Sequence[str], previous_speakers: Sequence[str] | None = None
) -> tuple[list[int], list[str]]:
    """One conversation through the released IEMOCAP indexing.

    Args:
        speakers: the conversation's speaker names, in utterance order.
        previous_speakers: the running speaker list left by the previous conversation of the
            split; None (or the state of "no previous conversation") for the first one.

    Returns:
        (indices, running list after this conversation) — pass the second item as
        `previous_speakers` of the next conversation.
    """
    if not speakers:
        return [], list(previous_speakers or [])
    if previous_speakers is None:  # first dialogue of the file: plain first appearance
        running: list[str] = []
        indices = [_index_in(running, name) for name in speakers]
        return indices, running
    carried = list(previous_speakers)
    first = _index_in(carried, speakers[0])
    running = []
    return [first] + [_index_in(running, name) for name in speakers[1:]], running


def released_iemocap_previous_speakers(split_speakers: Sequence[Sequence[str]]) -> list[list[str] | None]:
    """For a whole split in the release's order: the `previous_speakers` state each
    conversation needs (None for the first). Store it as a dataset column
    `previous_speakers` so that shuffled batches still reproduce the released indices."""
    states: list[list[str] | None] = []
    state: list[str] | None = None
    for speakers in split_speakers:
        states.append(None if state is None else list(state))
        _, state = released_iemocap_speaker_indices(speakers, state)
    return states


def _index_in(running: list[str], name: str) -> int:
    if name not in running:
        running.append(name)
    return running.index(name)


def load_speaker_map(path_or_mapping) -> dict[str, int]:
    """A speaker map from a JSON file path or a mapping -> {name: int id}."""
    if isinstance(path_or_mapping, Mapping):
        return {str(k): int(v) for k, v in path_or_mapping.items()}
    with open(path_or_mapping, encoding="utf-8") as handle:
        return {str(k): int(v) for k, v in json.load(handle).items()}


# --------------------------------------------------------------------------------------
# Prompt strings
# --------------------------------------------------------------------------------------


def speaker_token(index: int) -> str:
    """Speaker index k -> "<s{k+1}>"."""
    return f"<s{index + 1}>"


def build_prompts(
    texts: Sequence[str],
    speaker_indices: Sequence[int],
    separator: str = RELEASED_SEPARATOR,
    text_context: str = "history",
) -> list[str]:
    """One prompt per utterance of a conversation.

    Returns a list of len(texts) strings, e.g. for utterance 2 of (A, B):
    "<s1> hello <s2> hi there </s> Now<s2> feels". `separator` replaces `</s>` (see
    `prompt_separator`). `text_context="utterance"` (the paper's text ablation) keeps the same
    template without the history: "<s2> hi there </s> Now<s2> feels".
    """
    if text_context not in TEXT_CONTEXTS:
        raise ValueError(f"text_context must be one of {TEXT_CONTEXTS}, got {text_context!r}")
    prompts = []
    history = ""
    for text, index in zip(texts, speaker_indices):
        turn = speaker_token(index) + " " + text + " "
        history = history + turn if text_context == "history" else turn
        prompts.append(history.strip() + f" {separator} " + "Now" + speaker_token(index) + " feels")
    return prompts


def prompt_separator(tokenizer, tokenization_mode: str = "default") -> str:
    """The separator written between the history and "Now<sK> feels".

    "released" keeps the literal `</s>` of the released scripts whatever the tokenizer. The default
    mode takes the tokenizer's own sep token, so that it stays one token: a literal `</s>` would
    become the sub-words `<`, `/`, `s`, `>` for a BERT-family tokenizer (`[SEP]`). For RoBERTa
    both give `</s>`, so its prompts do not change.
    """
    if tokenization_mode == "released":
        return RELEASED_SEPARATOR
    separator = getattr(tokenizer, "sep_token", None)
    if not separator:
        raise ValueError(
            f"the tokenizer ({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}) has no sep "
            "token; MAGTKD's prompt separates the history from 'Now<sK> feels' with it (set "
            "tokenizer.sep_token, or use tokenization_mode='released' for a literal '</s>')"
        )
    return str(separator)


# --------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------


def register_speaker_tokens(tokenizer) -> None:
    """Add `<s1>`..`<s9>` to the tokenizer as special tokens (no-op when already there)."""
    present = set(getattr(tokenizer, "all_special_tokens", []))
    missing = [token for token in SPEAKER_TOKENS if token not in present]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": list(SPEAKER_TOKENS)}, replace_extra_special_tokens=False
        )


def released_backend(tokenizer):
    """A copy of the fast tokenizer's backend without the speaker tokens: it splits `<sK>`
    into ordinary sub-words, as the released scripts' tokenizer did, and gives every other
    token the same id."""
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in SPEAKER_TOKENS]
    return Tokenizer.from_str(json.dumps(state))


def encode_prompts(
    prompts: Sequence[str], tokenizer, max_tokens: int = 511, backend=None
) -> list[list[int]]:
    """Prompts -> token ids: no begin/end tokens, the LAST `max_tokens` kept, mask appended.

    `backend` (a `tokenizers.Tokenizer`, see `released_backend`) replaces the tokenizer's own
    encoding, for the released sub-word mode. Each list has at most max_tokens + 1 ids and
    ends with `tokenizer.mask_token_id`.
    """
    if backend is not None:
        encoded = [encoding.ids for encoding in backend.encode_batch(list(prompts), add_special_tokens=False)]
    else:
        # Not cut here (the last tokens are kept below), so no "longer than the model's maximum" warning.
        encoded = tokenizer(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]
    mask_id = tokenizer.mask_token_id
    return [list(ids[-max_tokens:]) + [mask_id] for ids in encoded] if max_tokens > 0 else [[mask_id] for _ in encoded]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left padding to the longest: (ids, attention mask), each (U, L)."""
    longest = max((len(s) for s in sequences), default=0)
    ids = [[pad_id] * (longest - len(s)) + list(s) for s in sequences]
    mask = [[0] * (longest - len(s)) + [1] * len(s) for s in sequences]
    return ids, mask
