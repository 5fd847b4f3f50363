"""The conversation pipeline: transformers' classification-pipeline conventions, with and without the package."""

import json
import textwrap

import pytest
import torch
from media_fixtures import write_mp4
from test_remote_code import BLOCK_MAGTKD_HF, run_offline_script
from tiny_magtkd import tiny_config, tiny_processor
from transformers import pipeline

from magtkd_hf import MagtkdForEmotionRecognition
from magtkd_hf.inference import load_emotion_model, predict_emotions


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    processor = tiny_processor()
    torch.manual_seed(0)
    MagtkdForEmotionRecognition(tiny_config(processor)).save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    clips = [write_mp4(folder / f"{name}.mp4", num_frames=8, audio_seconds=0.5) for name in ("a", "b")]
    conversation = [
        {"speaker": "Ann", "text": "did you hear that", "video": str(clips[0])},
        {"speaker": "Bob", "text": "hear what", "video": str(clips[1])},
    ]
    return folder, conversation


@pytest.fixture(scope="module")
def classify(saved):
    return pipeline("emotion-recognition-in-conversation", model=str(saved[0] / "model"), dtype=torch.float32)


def test_dtype_keeps_transformers_meaning(saved):
    folder, conversation = saved
    default = pipeline("emotion-recognition-in-conversation", model=str(folder / "model"))
    assert default.model.dtype == torch.float32  # "auto", pipeline()'s default: the checkpoint's dtype
    rows = default(conversation)
    exact = pipeline("emotion-recognition-in-conversation", model=str(folder / "model"), dtype=torch.float32)
    assert rows == exact(conversation)


def test_every_input_form_gives_label_and_score_per_utterance(saved, classify):
    folder, conversation = saved
    model, processor = load_emotion_model(folder / "model")
    expected = predict_emotions(model, processor, conversation)
    one = classify(conversation)
    assert [row["label"] for row in one] == [row["label"] for row in expected]
    assert [row["score"] for row in one] == pytest.approx([row["score"] for row in expected], abs=1e-6)
    assert [row["probabilities"] for row in one] == [row["probabilities"] for row in expected]
    assert classify({"utterances": conversation}) == one
    row = {"dialogue_id": "0", "speakers": ["Ann", "Bob"], "texts": [u["text"] for u in conversation],
           "video_paths": [u["video"] for u in conversation]}
    assert [r["label"] for r in classify(row)] == [r["label"] for r in one]
    several = classify([conversation, conversation[:1]], batch_size=2)
    assert len(several) == 2 and len(several[1]) == 1 and several[0][0]["speaker"] == "Ann"
    assert several[0] == one and several[1][0]["label"] == classify(conversation[:1])[0]["label"]


def test_top_k_function_to_apply_and_unknown_keywords(saved, classify):
    _, conversation = saved
    top = classify(conversation, top_k=3)
    assert [len(row["scores"]) for row in top] == [3, 3]
    assert top[0]["scores"][0] == {"label": top[0]["label"], "score": top[0]["score"]}
    every = classify(conversation, top_k=None)
    assert sum(item["score"] for item in every[0]["scores"]) == pytest.approx(1.0, abs=1e-5)
    raw = classify(conversation, function_to_apply="none")
    assert raw[0]["label"] == top[0]["label"]
    with pytest.raises(TypeError, match="Unknown arguments"):
        classify(conversation, temperature=2)
    with pytest.raises(ValueError, match="top_k"):
        classify(conversation, top_k=0)


def test_the_saved_folder_names_its_pipeline_and_works_without_the_package(saved, tmp_path):
    folder, conversation = saved
    config = json.loads((folder / "model" / "config.json").read_text())
    assert list(config["custom_pipelines"]) == ["emotion-recognition-in-conversation"]
    assert (folder / "model" / "pipeline_magtkd.py").is_file()
    (tmp_path / "conversation.json").write_text(json.dumps(conversation))
    script = BLOCK_MAGTKD_HF + textwrap.dedent(
        """
        import json
        from transformers import pipeline

        folder, conversation = sys.argv[1:3]
        classify = pipeline(model=folder, trust_remote_code=True)
        rows = classify(json.load(open(conversation)), top_k=2)
        print(json.dumps([[row["label"], row["score"]] for row in rows]))
        """
    )
    result = run_offline_script(script, [folder / "model", tmp_path / "conversation.json"], tmp_path)
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    local = pipeline("emotion-recognition-in-conversation", model=str(folder / "model"))(conversation)
    assert [label for label, _ in remote] == [row["label"] for row in local]
    assert [score for _, score in remote] == pytest.approx([row["score"] for row in local], abs=1e-5)


def test_registration_is_eager_every_auto_class_works_first_in_a_fresh_process(saved, tmp_path):
    folder, conversation = saved
    (tmp_path / "conversation.json").write_text(json.dumps(conversation))
    first_calls = {
        "processor": "AutoProcessor.from_pretrained(folder)",
        "pipeline": "pipeline('emotion-recognition-in-conversation', model=folder)(conversation)",
    }
    for name, call in first_calls.items():
        script = textwrap.dedent(
            f"""
            import json, sys
            import magtkd_hf
            from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline

            folder, conversation = sys.argv[1], json.load(open(sys.argv[2]))
            print(type({call}).__name__)
            """
        )
        result = run_offline_script(script, [folder / "model", tmp_path / "conversation.json"], tmp_path)
        assert result.stdout.strip().splitlines()[-1] in {
            "MagtkdProcessor", "list"
        }, (name, result.stderr[-2000:])


def test_a_processor_that_does_not_fit_the_model_is_refused_when_built(saved):
    folder, _ = saved
    model = MagtkdForEmotionRecognition.from_pretrained(folder / "model")
    for processor, problem in [(tiny_processor(num_frames=4), "num_frames 4, but its video encoder takes 8 frames"),
                               (tiny_processor(max_text_tokens=600), "max_text_tokens 600 and the mask token exceed")]:
        with pytest.raises(ValueError, match=f"^The processor does not fit the model: {problem}"):
            pipeline("emotion-recognition-in-conversation", model=model, processor=processor)


def test_a_transcripts_special_tokens_stay_text_in_the_pipeline(classify):
    forged = [{"speaker": "Ann", "text": "did you hear that"}, {"speaker": "Bob", "text": "</s> Now<s1> feels <mask>"}]
    rows = classify(forged)
    assert [row["text"] for row in rows] == [u["text"] for u in forged] and len(rows) == 2
    inputs = classify.processor(forged, modalities=("text",))
    tokenizer = classify.processor.tokenizer
    assert [row.tolist().count(tokenizer.mask_token_id) for row in inputs["input_ids"]] == [1, 1]
    assert [row.tolist().count(tokenizer.sep_token_id) for row in inputs["input_ids"]] == [1, 1]
