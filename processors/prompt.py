"""Speaker indexing and the text prompt of MAGTKD.

Speaker modes: "first_appearance" (default: per conversation 0, 1, 2, ... in order of first speaking); "global_map"
(a fixed name -> id map, the released MELD `speaker2id.json`; ids of 9 and more are written `<s10>`, `<s42>`..., not
speaker tokens, so they become ordinary sub-words as in the released scripts); "released_iemocap" (the released
preprocessing: one running speaker list through the split, reset only AFTER indexing the first utterance of each new
dialogue, so that utterance is indexed in the previous dialogue's list; see `released_iemocap_speaker_indices`).

Prompt of utterance i: "<s{k_1}> u_1 <s{k_2}> u_2 ... <s{k_i}> u_i {sep} Now<s{k_i}> feels", tokenized without
begin/end tokens, the last 511 tokens kept, the mask token appended. `{sep}` is the tokenizer's sep token (`</s>` for
RoBERTa, `[SEP]` for BERT); the "released" tokenization mode always writes `</s>`.

Transcripts are text: each is tokenized on its own with special-token parsing off and the prompt's ids assembled
around the real speaker, sep and mask ids, so that a transcript holding `</s>`, `<s1>` or `<mask>` cannot forge them
(the same ids as tokenizing the whole prompt string for any other text). The "released" mode keeps the released
scripts' behaviour: they tokenized the whole prompt string (`RobertaTokenizer.tokenize`), which reads `</s>`, `<s>`,
`<mask>`... inside a transcript as those tokens (MELD's and IEMOCAP's transcripts hold none).
"""

from __future__ import annotations

import json
import re
from typing import Callable, Mapping, Sequence

SPEAKER_TOKENS = tuple(f"<s{k}>" for k in range(1, 10))
MAX_SPEAKERS = len(SPEAKER_TOKENS)
SPEAKER_MODES = ("first_appearance", "global_map", "released_iemocap")
TOKENIZATION_MODES = ("default", "released")
TEXT_CONTEXTS = ("history", "utterance")  # the prompt holds the conversation so far, or the utterance alone
RELEASED_SEPARATOR = "</s>"  # RoBERTa's sep token, written literally by the released scripts
# A RoBERTa or BERT token spans about 4 characters of English; a text is cut to its last max_tokens * 32 characters
# before tokenization (see `bounded_text`), so that no text, however long, reaches the tokenizer whole.
MAX_CHARS_PER_TOKEN = 32
# The end of a word and the space after it: a token boundary for the RoBERTa (GPT-2) and BERT pre-tokenizers.
WORD_END = re.compile(r"\S ")


class MagtkdInputError(ValueError):
    """Bad processor input; the message names the conversation, the utterance and the file."""


# ---------------------------------------------------------------------- speakers


def released_iemocap_speaker_indices(
    speakers: Sequence[str], previous_speakers: Sequence[str] | None = None
) -> tuple[list[int], list[str]]:
    """One conversation through the released IEMOCAP indexing: (indices, the running list after it). Pass the list
    as `previous_speakers` of the next conversation of the split; None for the split's first."""
    if not speakers:
        return [], list(previous_speakers or [])
    if previous_speakers is None:  # the file's first dialogue: plain first appearance
        running: list[str] = []
        return [_index_in(running, name) for name in speakers], running
    first, running = _index_in(list(previous_speakers), speakers[0]), []
    return [first] + [_index_in(running, name) for name in speakers[1:]], running


def released_iemocap_previous_speakers(split_speakers: Sequence[Sequence[str]]) -> list[list[str] | None]:
    """For a whole split in the release's order: the `previous_speakers` each conversation needs (None for the
    first). Stored as a dataset column, it lets shuffled batches reproduce the released indices."""
    states, state = [], None
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
    if not isinstance(path_or_mapping, Mapping):
        with open(path_or_mapping, encoding="utf-8") as handle:
            path_or_mapping = json.load(handle)
    return {str(k): int(v) for k, v in path_or_mapping.items()}


def speaker_indices(processor, batch, previous_speakers) -> list[list[int]]:
    """Per conversation of the batch, every utterance's speaker index in the processor's speaker mode."""
    indices, running = [], None if previous_speakers is None else list(previous_speakers)
    for conversation in batch:
        names = [u.speaker for u in conversation.utterances]
        if processor.speaker_mode == "global_map":
            unknown = [position for position, name in enumerate(names) if name not in processor.speaker_map]
            if unknown:
                raise MagtkdInputError(f"conversation {conversation.name}, utterance "
                                       f"{conversation.utterances[unknown[0]].name}: speaker "
                                       f"{names[unknown[0]]!r} is not in the speaker map")
            indices.append([int(processor.speaker_map[name]) for name in names])
        elif processor.speaker_mode == "released_iemocap":
            if conversation.has_previous_speakers:
                running = conversation.previous_speakers
            conversation_indices, running = released_iemocap_speaker_indices(names, running)
            indices.append(conversation_indices)
        else:
            order: dict[str, int] = {}
            indices.append([order.setdefault(name, len(order)) for name in names])
            if len(order) > MAX_SPEAKERS:
                raise MagtkdInputError(f"conversation {conversation.name}: {len(order)} speakers ({', '.join(order)}); "
                                       f"at most {MAX_SPEAKERS} are supported (speaker tokens <s1>..<s9>)")
    return indices


# ---------------------------------------------------------------------- prompts and tokens


def build_prompts(texts: Sequence[str], speaker_indices: Sequence[int], separator: str = RELEASED_SEPARATOR,
                  text_context: str = "history") -> list[str]:
    """One prompt per utterance, e.g. for utterance 2 of (A, B): "<s1> hello <s2> hi there </s> Now<s2> feels";
    `text_context="utterance"` (the paper's text ablation) drops the history: "<s2> hi there </s> Now<s2> feels"."""
    _check_text_context(text_context)
    prompts, history = [], ""
    for text, index in zip(texts, speaker_indices):
        turn = f"<s{index + 1}> {text} "
        history = history + turn if text_context == "history" else turn
        prompts.append(f"{history.strip()} {separator} Now<s{index + 1}> feels")
    return prompts


def _check_text_context(text_context: str) -> None:
    if text_context not in TEXT_CONTEXTS:
        raise ValueError(f"text_context must be one of {TEXT_CONTEXTS}, got {text_context!r}")


def prompt_separator(tokenizer, tokenization_mode: str = "default") -> str:
    """The tokenizer's sep token (one token, whatever the family), or the literal `</s>` in "released" mode."""
    if tokenization_mode == "released":
        return RELEASED_SEPARATOR
    if not getattr(tokenizer, "sep_token", None):
        raise ValueError(
            f"the tokenizer ({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}) has no sep token; "
            "MAGTKD's prompt separates the history from 'Now<sK> feels' with it (set tokenizer.sep_token, or use "
            "tokenization_mode='released' for a literal '</s>')"
        )
    return str(tokenizer.sep_token)


def register_speaker_tokens(tokenizer) -> None:
    """Add `<s1>`..`<s9>` to the tokenizer as special tokens (no-op when already there)."""
    if not set(SPEAKER_TOKENS) <= set(getattr(tokenizer, "all_special_tokens", [])):
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPEAKER_TOKENS)},
                                     replace_extra_special_tokens=False)


def text_encoder(tokenizer, released: bool = False) -> Callable[[Sequence[str]], list[list[int]]]:
    """texts -> their token ids without begin/end tokens. Default: special-token parsing off (a transcript's `</s>` is
    the sub-words of `<`, `/s`, `>`). `released`: through a copy of the fast tokenizer's backend without the speaker
    tokens, which parses the other special tokens, as the released scripts' tokenizer did (every other id the same)."""
    if not released:
        return lambda texts: tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True,
                                       verbose=False)["input_ids"]
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in SPEAKER_TOKENS]
    backend = Tokenizer.from_str(json.dumps(state))
    return lambda texts: [encoding.ids for encoding in backend.encode_batch(list(texts), add_special_tokens=False)]


def refuse_special_token_parsing(tokenizer) -> None:
    """Refuse a tokenizer that reads special tokens inside text even with `split_special_tokens=True` (transformers
    5's `BertTokenizerLegacy` does): with it a transcript could forge the prompt's sep, speaker or mask tokens."""
    special_ids = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    tokens = list(tokenizer.all_special_tokens)
    parsed = [token for token, ids in zip(tokens, text_encoder(tokenizer)(tokens)) if special_ids & set(ids)]
    if parsed:
        raise ValueError(f"{type(tokenizer).__name__} still reads the special tokens {parsed} inside text with "
                         "split_special_tokens=True, so a transcript could forge the prompt's structure: use its fast "
                         "tokenizer (AutoTokenizer)")


def bounded_text(text: str, max_tokens: int) -> str:
    """`text`, or, when longer than max_tokens * MAX_CHARS_PER_TOKEN characters, its end from the first word start in
    that many last characters ("" when there is none). Only a prompt's last tokens are kept, and a word start is a
    token boundary: the cut text gives the same last tokens as the whole one whenever it holds max_tokens of them."""
    limit = max_tokens * MAX_CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    word_end = WORD_END.search(text, len(text) - limit)
    return text[word_end.end():] if word_end else ""


def encode_prompts(texts: Sequence[str], speaker_indices: Sequence[int], tokenizer, max_tokens: int = 511,
                   text_context: str = "history", released: bool = False, encode=None) -> list[list[int]]:
    """One conversation's prompts (see `build_prompts`) as token ids without begin/end tokens, the LAST `max_tokens`
    kept, the mask token appended. `encode`: `text_encoder(tokenizer, released)`, made once per batch by the caller.

    Default: the prompt's text pieces are tokenized apart (split where the whole prompt string's tokens split: at
    the speaker and sep tokens, and before the space that follows a word), each transcript once, as text, and the ids
    assembled around the real speaker and sep ids. `released`: the prompt strings tokenized whole, as released."""
    encode = encode or text_encoder(tokenizer, released)
    if released:
        prompts = build_prompts(texts, speaker_indices, RELEASED_SEPARATOR, text_context)
        return [ids[-max_tokens:] + [tokenizer.mask_token_id] for ids in encode(prompts)]
    _check_text_context(text_context)
    separator = [tokenizer.convert_tokens_to_ids(prompt_separator(tokenizer))]
    space, units = _speaker_units(tokenizer, encode, speaker_indices)
    prompts, history = [], []
    for position, (text, index) in enumerate(zip(encode([f" {text}" for text in texts]), speaker_indices)):
        opening, after_turn, ending = units[index]
        if text_context == "history" and position > 0:
            history = (history + after_turn + text)[-max_tokens:]
        else:
            history = (opening + text)[-max_tokens:]
        prompts.append((history + space + separator + ending)[-max_tokens:] + [tokenizer.mask_token_id])
    return prompts


def _speaker_units(tokenizer, encode, speaker_indices) -> tuple[list[int], dict]:
    """The ids of " ", and per speaker index those of its marker opening a prompt, its marker after a turn (" <sK>")
    and the prompt's end " Now<sK> feels". `<s1>`..`<s9>` are speaker tokens; `<s10>`... are text, which the space
    before them joins."""
    space, now, feels = encode([" ", " Now", " feels"])
    units = {}
    for index in set(speaker_indices):
        marker = f"<s{index + 1}>"
        if 0 <= index < MAX_SPEAKERS:
            token = [tokenizer.convert_tokens_to_ids(marker)]
            units[index] = (token, space + token, now + token + feels)
        else:
            units[index] = tuple(encode([marker, f" {marker}", f" Now{marker} feels"]))
    return space, units
