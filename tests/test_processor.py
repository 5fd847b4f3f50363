"""MagtkdProcessor: prompt, speakers, outputs, rows, errors, save/load and remote code."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from magtkd_hf.processors import (
    SPEAKER_TOKENS,
    MagtkdInputError,
    MagtkdProcessor,
    build_prompts,
    released_iemocap_previous_speakers,
    released_iemocap_speaker_indices,
)
from magtkd_hf.processors.media import (
    TimeWindow,
    frames_to_pixel_values_torch,
    read_video_frames,
    released_iemocap_frame_indices,
    uniform_frame_indices,
)

from media_fixtures import make_tiny_roberta_tokenizer, sine, write_mp4, write_wav

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processor_media")
    return {
        "clip_a": str(write_mp4(folder / "dia0_utt0.mp4", num_frames=16, audio_seconds=1.0)),
        "clip_b": str(write_mp4(folder / "dia0_utt1.mp4", num_frames=12, audio_seconds=0.5)),
        "silent": str(write_mp4(folder / "silent.mp4", num_frames=8)),
        "dialogue": str(write_mp4(folder / "Ses01F_impro01.mp4", num_frames=48, width=32, height=32)),
        "wav_22k": str(write_wav(folder / "utt.wav", sine(440.0, 0.75, 22050), 22050)),
        "garbage": _garbage(folder / "broken.mp4"),
        "missing": str(folder / "nowhere.mp4"),
    }


def _garbage(path):
    path.write_bytes(b"not a video" * 20)
    return str(path)


@pytest.fixture
def processor():
    return make_processor()


def make_processor(**settings):
    return MagtkdProcessor(
        make_tiny_roberta_tokenizer(),
        MagtkdProcessor.default_feature_extractor(),
        MagtkdProcessor.default_image_processor(),
        **settings,
    )


def text_only(speakers, texts):
    return [{"speaker": s, "text": t} for s, t in zip(speakers, texts)]


TEXT = ("text",)

# ----------------------------------------------------------------------------- prompt


def test_prompt_strings():
    prompts = build_prompts(["hello there", "I am fine", "what a day"], [0, 1, 0])
    assert prompts == [
        "<s1> hello there </s> Now<s1> feels",
        "<s1> hello there <s2> I am fine </s> Now<s2> feels",
        "<s1> hello there <s2> I am fine <s1> what a day </s> Now<s1> feels",
    ]


def test_token_layout_mask_last_left_padding_no_bos(processor):
    tokenizer = processor.tokenizer
    conversation = text_only(["A", "B", "A"], ["hello there", "I am fine thanks and you", "what a day"])
    out = processor(conversation, modalities=TEXT)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 3
    assert torch.all(ids[:, -1] == tokenizer.mask_token_id)
    assert torch.all(mask[:, -1] == 1)
    # left padding: each mask row is 0...0 1...1
    for row_ids, row_mask in zip(ids, mask):
        length = int(row_mask.sum())
        assert torch.all(row_mask[-length:] == 1) and torch.all(row_mask[:-length] == 0)
        assert torch.all(row_ids[:-length] == tokenizer.pad_token_id)
        assert row_ids[-length] != tokenizer.bos_token_id  # no begin token
        assert tokenizer.bos_token_id not in row_ids[-length:].tolist()
    expected = tokenizer("<s1> hello there </s> Now<s1> feels", add_special_tokens=False)["input_ids"]
    assert ids[0, -len(expected) - 1 : -1].tolist() == expected


def test_truncation_keeps_last_511_tokens(processor):
    tokenizer = processor.tokenizer
    long_text = " ".join(["the weather is nice and the sun is out"] * 120)
    out = processor(text_only(["A", "B"], [long_text, "we are going to the coffee house"]), modalities=TEXT)
    assert out["input_ids"].shape[1] == 512
    full = tokenizer(build_prompts([long_text, "we are going to the coffee house"], [0, 1])[1], add_special_tokens=False)
    assert len(full["input_ids"]) > 511
    assert out["input_ids"][1, :-1].tolist() == full["input_ids"][-511:]


def test_a_long_text_is_cut_before_tokenization_with_the_same_last_tokens(monkeypatch):
    processor = make_processor(max_text_tokens=20)  # a text is read from its last 20 x 32 = 640 characters
    tokenizer = processor.tokenizer
    long_text = " ".join(["the  weather is nice, and the sun is out!"] * 200)  # 8,600 characters
    conversation = text_only(["A", "B"], [long_text, "we are going"])
    reference = tokenizer(build_prompts([long_text, "we are going"], [0, 1]), add_special_tokens=False)["input_ids"]
    longest = []
    tokenizer_call = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, texts, **options: (
        longest.append(max(len(text) for text in texts)), tokenizer_call(self, texts, **options))[1])
    out = processor(conversation, modalities=TEXT)
    assert [row[-21:] for row in out["input_ids"].tolist()] == [ids[-20:] + [tokenizer.mask_token_id]
                                                                for ids in reference]
    assert max(longest) <= 641


def test_a_long_text_without_enough_tokens_in_its_end_is_refused(processor):
    text = "hello " + " " * 20_000 + "there"  # 511 x 32 = 16,352 characters read: one word, not 511 tokens
    message = _error(processor, [text_only(["A", "B"], ["hi", text])], modalities=TEXT)
    assert message.startswith("conversation #0, utterance #1: the transcript has 20,011 characters; only its last "
                              "16,352 are read (max_text_tokens 511 x 32)")


def test_return_tensors_np_pt_and_refused_others(processor):
    conversation = text_only(["A", "B"], ["hello there", "I am fine"])
    as_numpy, as_torch = processor(conversation, modalities=TEXT, return_tensors="np"), processor(conversation,
                                                                                                  modalities=TEXT)
    assert set(as_numpy) == set(as_torch)
    for key, value in as_numpy.items():
        assert isinstance(value, np.ndarray) and np.array_equal(value, as_torch[key].numpy()), key
    assert as_numpy["input_ids"].dtype == np.int64
    for wrong in ("tf", "jax", "list"):
        with pytest.raises(ValueError, match=f"return_tensors must be one of \\('pt', 'np'\\).*got '{wrong}'"):
            processor(conversation, return_tensors=wrong)


def test_speaker_tokens_are_single_special_tokens(processor):
    tokenizer = processor.tokenizer
    speaker_ids = tokenizer.convert_tokens_to_ids(list(SPEAKER_TOKENS))
    assert len(set(speaker_ids)) == 9 and tokenizer.unk_token_id not in speaker_ids
    assert set(SPEAKER_TOKENS) <= set(tokenizer.all_special_tokens)
    out = processor(text_only(["A", "B"], ["hello there", "I am fine"]), modalities=TEXT)
    row = out["input_ids"][1].tolist()
    assert row.count(speaker_ids[0]) == 1 and row.count(speaker_ids[1]) == 2


def test_released_tokenization_splits_speaker_tokens_into_subwords():
    processor = make_processor(tokenization_mode="released")
    out = processor(text_only(["A", "B"], ["hello there", "I am fine"]), modalities=TEXT)
    speaker_ids = set(processor.tokenizer.convert_tokens_to_ids(list(SPEAKER_TOKENS)))
    row = [i for i, m in zip(out["input_ids"][1].tolist(), out["attention_mask"][1].tolist()) if m]
    assert not speaker_ids & set(row)
    # the same ids as a tokenizer that never registered the speaker tokens (the released setup)
    plain = make_tiny_roberta_tokenizer()
    prompt = "<s1> hello there <s2> I am fine </s> Now<s2> feels"
    expected = plain(prompt, add_special_tokens=False)["input_ids"] + [plain.mask_token_id]
    assert row == expected
    assert plain.convert_tokens_to_ids("</s>") in row  # </s> stays one special token


def make_tiny_bert_tokenizer(folder, **options):
    """A WordPiece (BERT-family, sep token `[SEP]`) tokenizer over a small vocabulary written to `folder`; it holds
    the sub-words `<`, `/`, `s`, `>` that a literal `</s>` would split into."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<", "/", ">", "s", "##s", "##1", "##2"]
    vocab += ["hello", "there", "i", "am", "fine", "now", "feels"]
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizer(str(path), **options)


def make_bert_processor(folder, tokenizer_options=None, **settings):
    tokenizer = make_tiny_bert_tokenizer(folder, **(tokenizer_options or {}))
    return MagtkdProcessor(
        tokenizer, MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor(32), **settings
    )


def test_bert_prompt_uses_the_tokenizers_own_sep_token(tmp_path):
    processor = make_bert_processor(tmp_path)
    tokenizer = processor.tokenizer
    out = processor(text_only(["A", "B"], ["hello there", "I am fine"]), modalities=TEXT)
    rows = [[i for i, m in zip(ids, mask) if m] for ids, mask in zip(out["input_ids"].tolist(), out["attention_mask"].tolist())]
    sep_id = tokenizer.sep_token_id
    subword_ids = set(tokenizer.convert_tokens_to_ids(["<", "/", "s", ">"]))
    assert tokenizer.unk_token_id not in subword_ids
    for row in rows:
        assert row.count(sep_id) == 1 and not subword_ids & set(row)
    # where RoBERTa's prompt has `</s>`, this one has `[SEP]`
    expected = tokenizer("<s1> hello there <s2> I am fine [SEP] Now<s2> feels", add_special_tokens=False)["input_ids"]
    assert rows[1] == expected + [tokenizer.mask_token_id]
    assert tokenizer.convert_ids_to_tokens(rows[1]) == [
        "<s1>", "hello", "there", "<s2>", "i", "am", "fine", "[SEP]", "now", "<s2>", "feels", "[MASK]"
    ]


def test_bert_released_mode_keeps_the_literal_released_separator(tmp_path):
    processor = make_bert_processor(tmp_path, tokenization_mode="released")
    out = processor(text_only(["A"], ["hello there"]), modalities=TEXT)
    tokens = processor.tokenizer.convert_ids_to_tokens([i for i, m in zip(out["input_ids"][0].tolist(), out["attention_mask"][0].tolist()) if m])
    assert "[SEP]" not in tokens
    assert tokens[tokens.index("there") + 1 : tokens.index("now")] == ["<", "/", "s", ">"]


def test_a_tokenizer_without_sep_token_is_refused_in_default_mode(tmp_path):
    processor = make_bert_processor(tmp_path, tokenizer_options={"sep_token": None})
    with pytest.raises(ValueError, match="has no sep token"):
        processor(text_only(["A"], ["hello there"]), modalities=TEXT)
    released = make_bert_processor(tmp_path, tokenizer_options={"sep_token": None}, tokenization_mode="released")
    assert released(text_only(["A"], ["hello there"]), modalities=TEXT)["input_ids"].shape[0] == 1


# ----------------------------------------------------------------------------- speakers


def test_first_appearance_speakers(processor):
    out = processor(
        [text_only(["Ross", "Rachel", "Ross", "Joey"], ["a b", "c d", "e f", "g h"]), text_only(["Joey"], ["hi"])],
        modalities=TEXT,
    )
    assert out["speaker_ids"].tolist() == [[0, 1, 0, 2], [0, 0, 0, 0]]
    assert out["utterance_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]


def test_global_speaker_map(tmp_path):
    path = tmp_path / "speaker2id.json"
    path.write_text(json.dumps({"Chandler": 0, "Joey": 2, "Mona": 10}))
    processor = make_processor(speaker_mode="global_map", speaker_map=str(path))
    out = processor(text_only(["Joey", "Mona", "Chandler"], ["hi", "hello", "hey"]), modalities=TEXT)
    assert out["speaker_ids"].tolist() == [[2, 10, 0]]
    # id 10 is written <s11>: not a speaker token, so ordinary sub-words (as released MELD)
    assert processor.tokenizer.convert_tokens_to_ids("<s3>") in out["input_ids"][1].tolist()
    with pytest.raises(MagtkdInputError, match=r"conversation #0, utterance #1: speaker 'Gunther'"):
        processor(text_only(["Joey", "Gunther"], ["hi", "hello"]), modalities=TEXT)


RELEASED_SPLIT = [["F", "M", "F"], ["M", "F", "M", "M"], ["M", "M", "F"]]


def released_loop_reference(split):
    """The released IEMOCAP loop, restated: one running list, reset after the first utterance
    of each new dialogue has been indexed."""
    running, previous_dialogue, result = [], None, []
    for dialogue, speakers in enumerate(split):
        ids = []
        for position, speaker in enumerate(speakers):
            if speaker not in running:
                running.append(speaker)
            ids.append(running.index(speaker))
            if position == 0 and previous_dialogue is not None:
                running = []
        previous_dialogue = dialogue
        result.append(ids)
    return result


def test_released_iemocap_indexing_reproduces_the_bug():
    expected = released_loop_reference(RELEASED_SPLIT)
    assert expected == [[0, 1, 0], [1, 0, 1, 1], [1, 0, 1]]  # first appearance: [0,1,0],[0,1,0,0],[0,0,1]
    state, got = None, []
    for speakers in RELEASED_SPLIT:
        ids, state = released_iemocap_speaker_indices(speakers, state)
        got.append(ids)
    assert got == expected

    rows = [
        {"dialogue_id": f"d{i}", "speakers": s, "texts": ["word"] * len(s)} for i, s in enumerate(RELEASED_SPLIT)
    ]
    processor = make_processor(speaker_mode="released_iemocap")
    # the whole split in order, in one call
    out = processor(rows, modalities=TEXT)
    assert [r[: len(s)] for r, s in zip(out["speaker_ids"].tolist(), RELEASED_SPLIT)] == expected
    # shuffled batches: each row carries its state (a dataset column)
    for row, state in zip(rows, released_iemocap_previous_speakers(RELEASED_SPLIT)):
        row["previous_speakers"] = state
    for index in (2, 0, 1):
        single = processor(rows[index], modalities=TEXT)
        assert single["speaker_ids"][0].tolist() == expected[index]
    # or the state passed to the call
    state_before_last = released_iemocap_previous_speakers(RELEASED_SPLIT)[2]
    plain_row = {"dialogue_id": "d2", "speakers": RELEASED_SPLIT[2], "texts": ["w"] * 3}
    assert processor(plain_row, modalities=TEXT, previous_speakers=state_before_last)["speaker_ids"][0].tolist() == expected[2]


def test_more_than_nine_speakers_is_an_error(processor):
    conversation = text_only([f"P{k}" for k in range(10)], ["hi"] * 10)
    with pytest.raises(MagtkdInputError, match=r"conversation #1: 10 speakers"):
        processor([text_only(["A"], ["hi"]), conversation], modalities=TEXT)


# ----------------------------------------------------------------------------- full output


def test_outputs_shapes_and_structure(processor, media):
    conversations = [
        [
            {"speaker": "A", "text": "hello there", "audio": None, "video": media["clip_a"], "label": 3},
            {"speaker": "B", "text": "I am fine", "audio": media["wav_22k"], "video": media["clip_b"], "label": 1},
        ],
        [
            {
                "speaker": "C",
                "text": "what a day",
                "audio": (sine(440.0, 0.25, 8000, channels=2), 8000),
                "video": media["clip_b"],
                "label": 0,
            }
        ],
    ]
    out = processor(conversations)
    assert out["input_ids"].shape[0] == 3 and out["attention_mask"].shape == out["input_ids"].shape
    # audio: 1.0 s sound track, 0.75 s WAV at 22.05 kHz, 0.25 s stereo array at 8 kHz -> 16 kHz
    assert out["input_values"].shape == (3, 16000) and out["input_values"].dtype == torch.float32
    assert out["audio_attention_mask"].sum(1).tolist() == [16000, 12000, 4000]
    real = out["input_values"][1, :12000]
    assert abs(float(real.mean())) < 1e-3 and abs(float(real.std()) - 1) < 1e-2  # normalised
    assert torch.all(out["input_values"][1, 12000:] == 0)
    assert out["pixel_values"].shape == (3, 8, 3, 224, 224)
    assert out["speaker_ids"].tolist() == [[0, 1], [0, 0]]
    assert out["utterance_mask"].tolist() == [[1, 1], [1, 0]]
    assert out["conversation_index"].tolist() == [0, 0, 1]
    assert out["utterance_index"].tolist() == [0, 1, 0]
    assert out["labels"].tolist() == [[3, 1], [0, -100]]
    # utterance_mask selects utterances in row-major order
    mask = out["utterance_mask"].bool()
    assert out["labels"][mask].tolist() == [3, 1, 0]
    for key in ("speaker_ids", "utterance_mask", "conversation_index", "utterance_index", "labels", "input_ids"):
        assert out[key].dtype == torch.long


def test_max_audio_samples_crop(media):
    processor = make_processor(max_audio_samples=4000)
    out = processor([{"speaker": "A", "text": "hi", "audio": media["wav_22k"], "video": None}], modalities=("audio",))
    assert out["input_values"].shape == (1, 4000)


def _normalised(waveform):
    waveform = np.asarray(waveform, dtype=np.float64)
    return (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)


def test_released_audio_mode_normalises_the_whole_clip_then_crops():
    # 30 s at 16 kHz (longer than the 25 s crop); the last 5 s are loud and offset, so the
    # statistics of the whole clip differ from those of the first 25 s
    rate, crop = 16000, 400_000
    rng = np.random.default_rng(0)
    waveform = sine(220.0, 30.0, rate, amplitude=0.1) + 0.01 * rng.standard_normal(30 * rate).astype(np.float32)
    waveform[crop:] = waveform[crop:] * 8 + 0.3
    conversation = [{"speaker": "A", "text": "hi", "audio": (waveform, rate)}]
    released = make_processor(audio_mode="released")(conversation, modalities=("audio",))["input_values"][0]
    default = make_processor()(conversation, modalities=("audio",))["input_values"][0]
    assert released.shape == default.shape == (crop,)
    np.testing.assert_allclose(released.numpy(), _normalised(waveform)[:crop], atol=2e-4)  # normalise, then crop
    np.testing.assert_allclose(default.numpy(), _normalised(waveform[:crop]), atol=2e-4)  # crop, then normalise
    assert float((released - default).abs().max()) > 0.5
    # a clip shorter than the crop: both orders agree; padding stays zero in a batch
    short = [{"speaker": "A", "text": "hi", "audio": (waveform[: 2 * rate], rate)}, conversation[0]]
    out = make_processor(audio_mode="released")(short, modalities=("audio",))
    np.testing.assert_allclose(out["input_values"][0, : 2 * rate].numpy(), _normalised(waveform[: 2 * rate]), atol=2e-4)
    assert torch.all(out["input_values"][0, 2 * rate :] == 0) and out["audio_attention_mask"].sum(1).tolist() == [32000, crop]
    with pytest.raises(ValueError, match="audio_mode"):
        make_processor(audio_mode="crop_first")


def test_modalities_can_be_skipped(processor):
    out = processor(text_only(["A"], ["hi"]), modalities=TEXT)
    assert "pixel_values" not in out and "input_values" not in out and "labels" not in out
    assert set(out) == {"input_ids", "attention_mask", "speaker_ids", "utterance_mask", "conversation_index", "utterance_index"}


def test_image_processor_backend_agrees_with_torch_path(media):
    conversation = [{"speaker": "A", "text": "hi", "video": media["clip_a"]}]
    fast = make_processor()(conversation, modalities=("video",))["pixel_values"]
    slow = make_processor(image_backend="image_processor")(conversation, modalities=("video",))["pixel_values"]
    assert (fast - slow).abs().max() <= 0.036


# ----------------------------------------------------------------------------- dataset rows


def meld_row(media):
    return {
        "dialogue_id": 0,
        "utterance_ids": [0, 1],
        "speakers": ["Ross", "Rachel"],
        "texts": ["hello there", "I am fine"],
        "labels": [4, 3],
        "video_paths": [media["clip_a"], media["clip_b"]],
        "start_times": [12.0, 15.0],  # MELD gives times of the episode: never applied to clips
        "end_times": [14.0, 16.0],
    }


def iemocap_row(media):
    return {
        "dialogue_id": "Ses01F_impro01",
        "utterance_ids": ["Ses01F_impro01_F000", "Ses01F_impro01_M000"],
        "speakers": ["F", "M"],
        "texts": ["hello there", "I am fine"],
        "labels": [2, 4],
        "video_paths": [media["dialogue"], media["dialogue"]],
        "audio_paths": [media["wav_22k"], media["wav_22k"]],
        "start_times": [2.0, 0.5],
        "end_times": [3.0, 1.25],
    }


def test_meld_row_uses_sound_track_and_no_window(processor, media):
    out = processor(meld_row(media))
    assert out["labels"].tolist() == [[4, 3]]
    assert out["audio_attention_mask"].sum(1).tolist() == [16000, 8000]
    whole_clips = processor(
        [[{"speaker": "x", "text": "t", "video": media["clip_a"]}, {"speaker": "y", "text": "t", "video": media["clip_b"]}]],
        modalities=("video",),
    )
    assert torch.equal(out["pixel_values"], whole_clips["pixel_values"])


def test_iemocap_row_cuts_the_dialogue_video(processor, media):
    out = processor(iemocap_row(media), modalities=("audio", "video"))
    assert out["audio_attention_mask"].sum(1).tolist() == [12000, 12000]  # per-utterance WAVs, not cut
    for n, (start, end) in enumerate([(2.0, 3.0), (0.5, 1.25)]):
        explicit = processor(
            [{"speaker": "F", "text": "t", "video": media["dialogue"], "start": start, "end": end}],
            modalities=("video",),
        )["pixel_values"][0]
        assert torch.equal(out["pixel_values"][n], explicit)
    # the first utterance's window [2, 3] s widened to [1, 4] s at 8 fps: frames 7..31 (0-based)
    frames = read_video_frames(media["dialogue"], window=TimeWindow(2.0, 3.0).widened(1.0))
    reference = read_video_frames(media["dialogue"], num_frames=48)
    assert np.array_equal(frames, reference[[7 + i for i in uniform_frame_indices(25, 8)]])
    # explicit False: whole dialogue video
    whole = processor(iemocap_row(media), modalities=("video",), use_time_window=False)["pixel_values"]
    assert not torch.equal(whole, out["pixel_values"])


def test_released_frame_selection_on_dialogue_windows(media):
    processor = make_processor(frame_selection="released")
    row = iemocap_row(media)
    out = processor(row, modalities=("video",))
    for n, (start, end) in enumerate(zip(row["start_times"], row["end_times"])):
        window = TimeWindow(start, end).widened(1.0)
        chosen = released_iemocap_frame_indices(48, 8.0, window)
        frames = read_video_frames(media["dialogue"], num_frames=48)[chosen]
        expected = frames_to_pixel_values_torch(frames, processor.image_processor)
        assert torch.equal(out["pixel_values"][n], expected)


def test_column_batch_of_rows(processor, media):
    rows = [meld_row(media), iemocap_row(media)]
    columns = {key: [row.get(key) for row in rows] for key in set(rows[0]) | set(rows[1])}
    out = processor(columns, modalities=TEXT)
    assert out["speaker_ids"].tolist() == [[0, 1], [0, 1]]
    assert out["labels"].tolist() == [[4, 3], [2, 4]]


# ----------------------------------------------------------------------------- errors


def _error(processor, conversations, **kwargs):
    with pytest.raises(MagtkdInputError) as caught:
        processor(conversations, **kwargs)
    return str(caught.value)


def test_errors_name_conversation_utterance_and_file(processor, media):
    good = {"speaker": "A", "text": "hi", "audio": None, "video": media["clip_a"]}
    cases = [
        ({"video": media["missing"]}, media["missing"], "no such file"),
        ({"video": media["garbage"]}, media["garbage"], "unreadable"),
        ({"audio": media["silent"]}, media["silent"], "no audio track"),  # a given audio source must have sound
        ({"audio": media["missing"]}, media["missing"], "no such file"),
    ]
    for change, path, reason in cases:
        message = _error(processor, [[good], [good, dict(good, **change)]])
        assert "conversation #1, utterance #1" in message and path in message and reason in message, message


def test_errors_name_dialogue_and_utterance_ids(processor, media):
    row = iemocap_row(media)
    row["audio_paths"] = [media["wav_22k"], media["missing"]]
    message = _error(processor, row, modalities=("audio",))
    assert "'Ses01F_impro01'" in message and "'Ses01F_impro01_M000'" in message and media["missing"] in message


def _video_utterance(media, **times):
    return [{"speaker": "A", "text": "hi", "video": media["dialogue"]}, dict(speaker="B", text="yo", video=media["dialogue"], **times)]


@pytest.mark.parametrize(
    "times, expected",
    [
        ({"start": "abc", "end": 2.0}, "time window start 'abc' is not a number of seconds"),
        ({"start": 1.0, "end": [2.0]}, "time window end must be a number of seconds, got [2.0]"),
        ({"start": True, "end": 2.0}, "time window start must be a number of seconds, got True"),
        ({"start": float("nan"), "end": 2.0}, "time window start nan is not finite"),
        ({"start": 1.0, "end": "inf"}, "time window end 'inf' is not finite"),
        ({"start": -0.5, "end": 2.0}, "time window start -0.5 is negative"),
        ({"start": 2.0, "end": 2.0}, "time window start 2.0 is not before its end 2.0"),
        ({"start": 3.0, "end": 1.0}, "time window start 3.0 is not before its end 1.0"),
        ({"end": 2.0}, "the time window has an end (2.0) but no start"),
        ({"start": 1.0}, "the time window has a start (1.0) but no end"),
        ({"start": 1.0, "end": None}, "but no end"),
    ],
)
def test_bad_time_windows_are_refused(processor, media, times, expected):
    message = _error(processor, [text_only(["A"], ["hi"]), _video_utterance(media, **times)], modalities=("video",))
    assert "conversation #1, utterance #1" in message and expected in message, message


def test_time_windows_accept_numbers_and_numeric_strings(processor, media):
    as_float = processor(_video_utterance(media, start=2.0, end=3), modalities=("video",))["pixel_values"]
    as_text = processor(_video_utterance(media, start=" 2.0", end="3"), modalities=("video",))["pixel_values"]
    as_numpy = processor(_video_utterance(media, start=np.float32(2.0), end=np.int64(3)), modalities=("video",))
    assert torch.equal(as_float, as_text) and torch.equal(as_float, as_numpy["pixel_values"])
    # not cutting: the times are not read at all
    processor(_video_utterance(media, start="abc"), modalities=("video",), use_time_window=False)


def test_bad_row_times_are_refused(processor, media):
    row = iemocap_row(media)
    row["start_times"] = [2.0, "x"]
    message = _error(processor, row, modalities=("video",))
    assert "'Ses01F_impro01'" in message and "'Ses01F_impro01_M000'" in message and "'x'" in message
    row = iemocap_row(media)
    row["start_times"] = [2.0, None]
    assert "but no start" in _error(processor, row, modalities=("video",))
    row = iemocap_row(media)
    del row["end_times"]
    assert "'start_times' column but no 'end_times'" in _error(processor, row, modalities=("video",))
    # MELD rows: episode times are never applied, so they are not checked (MELD has end < start rows)
    meld = meld_row(media)
    meld["start_times"], meld["end_times"] = [14.0, 15.0], [12.0, None]
    processor(meld, modalities=("video",))


def test_window_past_the_end_of_the_media_is_an_error(processor, media):
    # the dialogue video has 48 frames at 8 fps (6 s); clip_a's sound track lasts 1 s
    message = _error(processor, [_video_utterance(media, start=6.5, end=7.0)], modalities=("video",))
    for part in ("conversation #0, utterance #1", media["dialogue"], "[6.5, 7] s", "starts past the end of the video", "6 s"):
        assert part in message, message
    released = make_processor(frame_selection="released")
    assert "starts past the end" in _error(released, [_video_utterance(media, start=6.0, end=7.0)], modalities=("video",))
    audio = [{"speaker": "A", "text": "hi", "video": media["clip_a"], "start": 1.2, "end": 2.0}]
    message = _error(processor, [audio], modalities=("audio",))
    for part in ("conversation #0, utterance #0", media["clip_a"], "[1.2, 2] s", "starts past the end of the audio", "1 s"):
        assert part in message, message


def test_window_cut_at_the_end_is_logged(processor, media, caplog):
    with caplog.at_level(logging.WARNING):
        out = processor(_video_utterance(media, start=5.0, end=9.0), modalities=("video",))
    assert out["pixel_values"].shape[0] == 2
    messages = [r.getMessage() for r in caplog.records if "cut at the end" in r.getMessage()]
    assert len(messages) == 1
    assert "conversation #0, utterance #1" in messages[0] and "[5, 9] s" in messages[0] and "6 s" in messages[0]


def test_empty_text_is_an_error(processor):
    message = _error(processor, [text_only(["A"], ["hi"]), text_only(["A", "B"], ["hi", "   "])], modalities=TEXT)
    assert "conversation #1, utterance #1" in message and "empty" in message


def test_bad_label_and_settings(processor):
    message = _error(processor, [{"speaker": "A", "text": "hi", "label": "joy"}], modalities=TEXT)
    assert "label must be an int" in message
    with pytest.raises(ValueError, match="speaker_mode"):
        make_processor(speaker_mode="global")
    with pytest.raises(ValueError, match="speaker_map"):
        make_processor(speaker_mode="global_map")


# ----------------------------------------------------------------------------- save / load


SETTINGS = dict(
    tokenization_mode="released",
    speaker_mode="global_map",
    speaker_map={"Ross": 6, "Rachel": 3},
    max_text_tokens=100,
    max_audio_samples=12345,
    audio_mode="released",
    num_frames=4,
    frame_selection="released",
    use_time_window=False,
    time_window_padding=0.5,
    image_backend="image_processor",
    video_num_threads=1,
)


def test_save_and_load_round_trip(tmp_path, media, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    processor = make_processor(**SETTINGS)
    processor.save_pretrained(tmp_path)
    for name in ("processing_magtkd.py", "prompt.py", "media.py", "processor_config.json"):
        assert (tmp_path / name).exists()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_magtkd.MagtkdProcessor"
    loaded = MagtkdProcessor.from_pretrained(tmp_path)
    for key, value in SETTINGS.items():
        assert getattr(loaded, key) == value, key
    assert loaded.tokenizer.padding_side == "left"
    assert list(loaded.image_processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    row = meld_row(media)
    a, b = processor(row), loaded(row)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockMagtkd(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "magtkd_hf" or name.startswith("magtkd_hf."):
                raise ImportError("magtkd_hf is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockMagtkd())
    folder, row_file, output = sys.argv[1:4]
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert not any(m == "magtkd_hf" or m.startswith("magtkd_hf.") for m in sys.modules), "magtkd_hf imported"
    assert type(processor).__name__ == "MagtkdProcessor"
    assert not type(processor).__module__.startswith("magtkd_hf"), type(processor).__module__
    with open(row_file) as handle:
        row = json.load(handle)
    torch.save(dict(processor(row)), output)
    print("module", type(processor).__module__)
    """
)


def test_auto_processor_remote_code_without_magtkd_hf(tmp_path, media):
    folder = tmp_path / "saved"
    processor = make_processor(speaker_mode="global_map", speaker_map={"Ross": 6, "Rachel": 3}, num_frames=4)
    processor.save_pretrained(folder)
    row = meld_row(media)
    (tmp_path / "row.json").write_text(json.dumps(row))
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "row.json"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout
    remote = torch.load(tmp_path / "out.pt")
    local = processor(row)
    assert set(remote) == set(local) and all(torch.equal(remote[k], local[k]) for k in local)
    assert remote["pixel_values"].shape[1] == 4
