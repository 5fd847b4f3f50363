"""Processor settings are checked when a processor is built or loaded, and `check_fits_model` refuses a processor
whose settings the model's encoders do not take: one line naming the setting, its value and the allowed range."""

import json

import pytest

from magtkd_hf import MagtkdFusionModel, MagtkdProcessor
from magtkd_hf.modeling_magtkd_stages import MagtkdAudioModel, MagtkdTextModel, MagtkdVideoModel

from tiny_magtkd import IMAGE_SIZE, tiny_config, tiny_fusion_config, tiny_processor, tiny_stage_config

OUT_OF_RANGE = [
    ({"num_frames": 100_000}, r"^num_frames must be an integer from 1 to 96 \(.*\), got 100000$"),
    ({"num_frames": 0}, r"^num_frames must be an integer from 1 to 96 .*got 0$"),
    ({"num_frames": 8.5}, r"^num_frames must be an integer .*got 8\.5$"),
    ({"max_audio_samples": 0}, r"^max_audio_samples must be an integer of at least 1, got 0$"),
    ({"max_text_tokens": 0}, r"^max_text_tokens must be an integer of at least 1, got 0$"),
    ({"max_text_tokens": "511"}, r"^max_text_tokens must be an integer of at least 1, got '511'$"),
]


@pytest.mark.parametrize("settings, message", OUT_OF_RANGE)
def test_out_of_range_settings_are_refused_when_built(settings, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor(**settings)


def test_image_sizes_and_sampling_rate_are_checked_when_built():
    with pytest.raises(ValueError, match=r"^image_processor.size\['shortest_edge'\] must be an integer from 16 to "
                                         r"512 pixels, got 20000$"):
        MagtkdProcessor(tiny_processor().tokenizer, MagtkdProcessor.default_feature_extractor(),
                        MagtkdProcessor.default_image_processor(20_000))
    for rate in (0, 1, 192_000):
        with pytest.raises(ValueError, match=rf"^sampling_rate must be an integer from 8,000 to 48,000 Hz, got {rate}$"):
            MagtkdProcessor(tiny_processor().tokenizer, MagtkdProcessor.default_feature_extractor(rate),
                            MagtkdProcessor.default_image_processor(32))


def test_max_text_tokens_within_the_tokenizers_limit():
    processor = tiny_processor()
    processor.tokenizer.model_max_length = 512
    assert tiny_processor_with(processor.tokenizer, max_text_tokens=511).max_text_tokens == 511
    with pytest.raises(ValueError, match=r"^max_text_tokens must be an integer from 1 to 511 \(the prompt and its "
                                         r"mask token within the tokenizer's model_max_length 512\), got 512$"):
        tiny_processor_with(processor.tokenizer, max_text_tokens=512)


def tiny_processor_with(tokenizer, **settings):
    return MagtkdProcessor(tokenizer, MagtkdProcessor.default_feature_extractor(),
                           MagtkdProcessor.default_image_processor(IMAGE_SIZE), **settings)


@pytest.mark.parametrize("path, value, message", [
    (("num_frames",), 100_000, r"num_frames must be an integer from 1 to 96"),
    (("max_text_tokens",), 0, r"max_text_tokens must be an integer of at least 1, got 0"),
    (("max_audio_samples",), 0, r"max_audio_samples must be an integer of at least 1, got 0"),
    (("feature_extractor", "sampling_rate"), 0, r"sampling_rate must be an integer from 8,000 to 48,000 Hz, got 0"),
    (("image_processor", "crop_size"), {"height": 20_000, "width": 20_000}, r"crop_size\['height'\] .* got 20000"),
])
def test_out_of_range_settings_are_refused_when_loaded(tmp_path, path, value, message):
    tiny_processor().save_pretrained(tmp_path)
    config_file = tmp_path / "processor_config.json"
    config = json.loads(config_file.read_text())
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"^{tmp_path}/processor_config.json: .*{message}"):
        MagtkdProcessor.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def end_to_end():
    from magtkd_hf import MagtkdForEmotionRecognition

    return MagtkdForEmotionRecognition(tiny_config(tiny_processor()))


def test_a_fitting_processor_passes(end_to_end):
    tiny_processor().check_fits_model(end_to_end)


def test_processor_settings_the_model_does_not_take_are_refused(end_to_end):
    cases = [
        (tiny_processor(num_frames=1), "num_frames 1, but its video encoder takes 8 frames"),
        (tiny_processor(num_frames=16), "num_frames 16, but its video encoder takes 8 frames"),
        (tiny_processor(max_text_tokens=600), "max_text_tokens 600 and the mask token exceed the 518 positions of "
                                              "its text encoder (roberta): at most 517"),
    ]
    slow = tiny_processor()
    slow.feature_extractor.sampling_rate = 8000
    cases.append((slow, "sampling_rate 8000 Hz, but its audio encoder (data2vec-audio) takes 16000 Hz audio"))
    larger = MagtkdProcessor(tiny_processor().tokenizer, MagtkdProcessor.default_feature_extractor(),
                             MagtkdProcessor.default_image_processor(64))
    cases.append((larger, "frames of 64 x 64 pixels (image_processor.crop_size), but its video encoder takes 32 x 32"))
    for processor, problem in cases:
        with pytest.raises(ValueError) as error:
            processor.check_fits_model(end_to_end)
        assert str(error.value) == f"The processor does not fit the model: {problem}.", problem


def test_stage_models_are_checked_and_a_fusion_model_has_nothing_to_check():
    processor = tiny_processor()
    stages = {"text": MagtkdTextModel, "audio": MagtkdAudioModel, "video": MagtkdVideoModel}
    for modality, model_class in stages.items():
        model = model_class(tiny_stage_config(processor, modality))
        processor.check_fits_model(model)
    video = MagtkdVideoModel(tiny_stage_config(processor, "video"))
    with pytest.raises(ValueError, match="num_frames 4, but its video encoder takes 8 frames"):
        tiny_processor(num_frames=4).check_fits_model(video)
    tiny_processor(num_frames=4, max_text_tokens=5000).check_fits_model(MagtkdFusionModel(tiny_fusion_config()))
