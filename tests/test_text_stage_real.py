"""The text stage as a real run needs it (issue: real data): batch-independent features for absolute-position (BERT
family) encoders, text-only runs from the MELD label files alone, the prompt settings, the schedule of short runs, a
part of the train split and class weights."""

import csv
import json
import logging

import numpy as np
import pytest
import torch
from media_fixtures import make_tiny_roberta_tokenizer
from tiny_magtkd import TEXTS, tiny_text_config
from transformers import BertConfig, BertModel, BertTokenizer

import magtkd_hf
from magtkd_hf import MagtkdProcessor, MagtkdTextConfig, MagtkdTextModel
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.apps.tiny import tiny_processor
from magtkd_hf.datasets_scripts.sample import MELD_TRANSCRIPTS_ROOT
from magtkd_hf.losses import classification_loss
from magtkd_hf.training import ProcessorSettings, StageSettings, TrainingConfig
from magtkd_hf.training.data import class_weights
from magtkd_hf.training.inputs import StageInputs, part_of_split
from magtkd_hf.training.loop import planned_epochs, schedule_lengths
from magtkd_hf.processors import build_prompts

BERT_WORDS = sorted({word for text in TEXTS for word in text.lower().split()} | {"now", "feels"})


def tiny_bert_tokenizer() -> BertTokenizer:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS]
    return BertTokenizer(vocab={word: index for index, word in enumerate(words)})


def text_model(processor: MagtkdProcessor, encoder_config) -> MagtkdTextModel:
    torch.manual_seed(0)
    config = MagtkdTextConfig.for_meld(encoder_config=encoder_config, feature_size=16)
    return MagtkdTextModel(config).eval()


def conversation(length: int) -> list[dict]:
    return [{"speaker": "AB"[k % 2], "text": TEXTS[k % len(TEXTS)]} for k in range(length)]


def features_alone_and_batched(processor, model):
    """The last utterance's feature of conversations of 1, 2, 5 and 3 utterances, each alone and all in one batch."""
    conversations = [conversation(length) for length in (1, 2, 5, 3)]
    last = np.cumsum([len(c) for c in conversations]) - 1
    batched = processor(conversations, modalities=("text",))
    with torch.no_grad():
        together = model(input_ids=batched["input_ids"], attention_mask=batched["attention_mask"]).features[last]
        alone = []
        for c in conversations:
            inputs = processor(c, modalities=("text",))
            alone.append(model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).features[-1])
    assert len(set(batched["attention_mask"].sum(dim=1).tolist())) > 1  # the batch really pads
    return torch.stack(alone), together


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_prompt_feature_does_not_depend_on_its_batch_mates(family):
    if family == "bert":
        processor = tiny_processor(tiny_bert_tokenizer())
        encoder_config = BertConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=37, max_position_embeddings=128)
    else:
        processor = tiny_processor(make_tiny_roberta_tokenizer())
        encoder_config = tiny_text_config(len(processor.tokenizer))
    alone, together = features_alone_and_batched(processor, text_model(processor, encoder_config))
    assert (alone - together).abs().max().item() <= 1e-5


def test_bert_positions_count_from_the_first_real_token():
    processor = tiny_processor(tiny_bert_tokenizer())
    encoder_config = BertConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=37, max_position_embeddings=128)
    model = text_model(processor, encoder_config)
    inputs = processor([conversation(1), conversation(4)], modalities=("text",))
    ids, mask = inputs["input_ids"][:1], inputs["attention_mask"][:1]
    real = mask[0].bool()
    with torch.no_grad():
        padded = model.text_encoder(ids, mask)
        unpadded = model.text_encoder(ids[:, real], mask[:, real])
        # Without position ids the encoder would number positions through the padding: a different feature.
        numbered_through_padding = model.text_encoder.projection(
            model.text_encoder.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1])
    assert torch.allclose(padded, unpadded, atol=1e-5)
    assert not torch.allclose(numbered_through_padding, unpadded, atol=1e-3)


def test_roberta_features_are_computed_as_before():
    """RoBERTa numbers positions past the padding itself: no position ids are passed, its outputs are unchanged."""
    processor = tiny_processor(make_tiny_roberta_tokenizer(), tokenization_mode="released")
    model = text_model(processor, tiny_text_config(len(processor.tokenizer)))
    inputs = processor([conversation(2), conversation(5)], modalities=("text",))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        expected = model.text_encoder.projection(
            model.text_encoder.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1])
        assert torch.equal(model.text_encoder(ids, mask), expected)
    assert model.text_encoder.positions_from_padding


def test_the_utterance_alone_prompt_has_no_history():
    history = build_prompts(["hi", "hello you"], [0, 1], "</s>")
    alone = build_prompts(["hi", "hello you"], [0, 1], "</s>", text_context="utterance")
    assert history[1] == "<s1> hi <s2> hello you </s> Now<s2> feels"
    assert alone == ["<s1> hi </s> Now<s1> feels", "<s2> hello you </s> Now<s2> feels"]
    with pytest.raises(ValueError, match="text_context"):
        tiny_processor(make_tiny_roberta_tokenizer(), text_context="everything")


def test_long_prompts_are_cut_without_a_length_warning(caplog):
    """The prompt is tokenized whole, then its last tokens kept: the tokenizer's "longer than the specified maximum
    sequence length" warning (which a plain call gives here) would be wrong."""
    from transformers.utils import logging as transformers_logging

    long = [{"speaker": "A", "text": " ".join(TEXTS * 30)}]
    transformers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            plain = make_tiny_roberta_tokenizer()
            plain.model_max_length = 16
            plain(long[0]["text"], add_special_tokens=False)
            assert any("sequence length" in record.getMessage() for record in caplog.records)
            caplog.clear()
            processor = tiny_processor(make_tiny_roberta_tokenizer(), max_text_tokens=7)
            processor.tokenizer.model_max_length = 16
            ids = processor(long, modalities=("text",))["input_ids"]
    finally:
        transformers_logging.disable_propagation()
    assert ids.shape == (1, 8) and ids[0, -1] == processor.tokenizer.mask_token_id
    assert not [record for record in caplog.records if "sequence length" in record.getMessage()]


# ----------------------------------------------------------------------------------------------- schedule and data


def test_warmup_is_a_ratio_of_the_run_and_max_steps_ends_it():
    settings = StageSettings(epochs=3, warmup_ratio=0.1, batch_size=4)
    assert schedule_lengths(settings, 100, 400) == (30, 300)
    short = StageSettings(epochs=1, warmup_ratio=0.1)
    assert schedule_lengths(short, 50, 200) == (5, 50)  # a one-epoch run still decays after 5 steps
    capped = StageSettings(epochs=10, max_steps=120, warmup_ratio=0.25)
    assert schedule_lengths(capped, 50, 200) == (30, 120)
    assert planned_epochs(capped, 50) == 3
    with pytest.raises(ValueError, match="warmup_ratio"):
        StageSettings(warmup_ratio=1.5)


def test_part_of_a_split_is_seeded_and_keeps_the_split_order():
    import datasets

    split = datasets.Dataset.from_dict({"dialogue_id": [str(k) for k in range(20)]})
    first = part_of_split(split, 5, seed=3)["dialogue_id"]
    assert first == part_of_split(split, 5, seed=3)["dialogue_id"] and len(first) == 5
    assert first == sorted(first, key=int)
    assert len(part_of_split(split, 0.5, seed=3)) == 10
    with pytest.raises(ValueError, match="21"):
        part_of_split(split, 21, seed=3)


def test_class_weights_and_the_weighted_loss():
    labels = [0] * 6 + [1] * 3 + [2]
    inverse = class_weights(labels, 4, "inverse")
    assert inverse == pytest.approx([10 / 24, 10 / 12, 10 / 4, 10 / 4])  # an absent class counts once
    assert class_weights(labels, 4, "inverse_sqrt") == pytest.approx(np.sqrt(inverse).tolist())
    assert class_weights(labels + [-100], 4, "none") is None
    logits, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, -100, 1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 1, 2, 4]], targets[[0, 1, 2, 4]],
                                                 weight=torch.tensor(inverse))
    assert torch.allclose(classification_loss(logits, targets, inverse), expected)
    with pytest.raises(ValueError, match="class_weights"):
        MagtkdTextConfig.for_meld(encoder_config=tiny_text_config(50), class_weights=[1.0, 2.0])


# ----------------------------------------------------------------------------------------------- text-only runs


@pytest.fixture(scope="module")
def transcripts_only(tmp_path_factory):
    """The shipped real MELD label files, cut to their first dialogues: a release folder without a single clip."""
    folder = tmp_path_factory.mktemp("meld-csv")
    for split, dialogues in (("train", 6), ("dev", 3), ("test", 3)):
        with open(MELD_TRANSCRIPTS_ROOT / f"{split}_sent_emo.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        column = rows[0].index("Dialogue_ID")
        with open(folder / f"{split}_sent_emo.csv", "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([rows[0], *[row for row in rows[1:] if int(row[column]) < dialogues]])
    return folder


@pytest.fixture(scope="module")
def bert_encoder(tmp_path_factory):
    """A tiny random BERT and its WordPiece tokenizer, saved as a pretrained encoder folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = tiny_bert_tokenizer()
    tokenizer.save_pretrained(str(folder))
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=160), add_pooling_layer=False).save_pretrained(
        str(folder))
    return folder


def test_the_shipped_meld_label_files_are_the_full_release():
    sizes = {}
    for split in ("train", "dev", "test"):
        with open(MELD_TRANSCRIPTS_ROOT / f"{split}_sent_emo.csv", encoding="utf-8", newline="") as handle:
            sizes[split] = sum(1 for _ in csv.DictReader(handle))
    assert sizes == {"train": 9989, "dev": 1109, "test": 2610}
    assert "GNU General Public License" in (MELD_TRANSCRIPTS_ROOT / "README.md").read_text()


def test_text_stages_run_from_the_label_files_alone(tmp_path, transcripts_only, bert_encoder, capsys):
    """train text, extract-features and fusion with --modalities text: no clip is looked for, the audio and video
    encoders (here: folders that do not exist) are never loaded, the fusion takes its missing embeddings."""
    output = tmp_path / "run"
    common = ["--output-dir", str(output), "--data", str(transcripts_only), "--modalities", "text",
              "--text-encoder", str(bert_encoder), "--audio-encoder", str(tmp_path / "no-audio-encoder"),
              "--video-encoder", str(tmp_path / "no-video-encoder"), "--max-text-tokens", "40",
              "--text-context", "history", "--train-dialogues", "4", "--cpu", "--num-workers", "0",
              "--mixed-precision", "no"]
    assert cli(["train", "text", *common, "--max-steps", "3", "--epochs", "5", "--batch-size", "4",
                "--learning-rate", "1e-3", "--class-weighting", "inverse_sqrt"]) == 0
    metrics = json.loads((output / "text" / "metrics.json").read_text())
    assert metrics["schedule"] == {"warmup_steps": 0, "total_steps": 3, "optimizer_steps": 3}
    assert len(metrics["history"]) == 1 and metrics["settings"]["class_weighting"] == "inverse_sqrt"
    assert metrics["utterances"]["validation"] > 0 and metrics["test"]["num_utterances"] > 0
    saved = json.loads((output / "text" / "config.json").read_text())
    assert saved["feature_size"] == 768 and len(saved["class_weights"]) == 7
    assert json.loads((output / "processor" / "processor_config.json").read_text())["max_text_tokens"] == 40

    assert cli(["train", "extract-features", *common]) == 0
    import datasets

    features = datasets.load_from_disk(str(output / "features"))
    assert "audio" not in features["train"].column_names and "text" in features["train"].column_names
    assert len(features["train"]) == 4  # --train-dialogues
    assert cli(["train", "fusion", *common, "--epochs", "1", "--batch-size", "2"]) == 0
    fusion = json.loads((output / "fusion" / "metrics.json").read_text())
    assert fusion["test"]["num_utterances"] == metrics["test"]["num_utterances"]

    # The run's processor keeps its prompt settings: another length is refused, not silently mixed.
    with pytest.raises(ValueError, match="max_text_tokens 40 \\(asked: 64\\)"):
        StageInputs(TrainingConfig(output_dir=str(output), data=str(transcripts_only), modalities=["text"],
                                   text_encoder=str(bert_encoder),
                                   processor_settings=ProcessorSettings(max_text_tokens=64))).processor()


def test_a_text_stage_of_a_folder_without_clips_needs_text_only(tmp_path, transcripts_only, bert_encoder):
    """Even in a run of every modality, the text stage checks no clip (the audio stage would)."""
    tiny_processor(tiny_bert_tokenizer()).save_pretrained(str(tmp_path / "processor"))
    config = TrainingConfig(output_dir=str(tmp_path), data=str(transcripts_only), text_encoder=str(bert_encoder))
    inputs = StageInputs(config)
    assert len(inputs.conversations(check_media=False)["train"]) == 6
    with pytest.raises(Exception, match="clip|missing"):
        inputs.conversations(check_media=True)
    assert magtkd_hf.MELD_LABELS == tuple(inputs.conversations(False)["train"].features["labels"].feature.names)
