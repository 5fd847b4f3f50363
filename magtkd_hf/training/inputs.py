"""What the stages of one run share, resolved from its [`TrainingConfig`]: the recipe, the stage folders, the
conversations and the processor (read once), the encoders and their configs."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
from accelerate import PartialState
from transformers import AutoConfig

from ..processors import MagtkdProcessor, released_iemocap_previous_speakers
from ..processors.frame_cache import METADATA_FILE, FrameCache
from .data import load_conversations
from .recipe import load_recipe
from .settings import STAGES, ModelSettings, ProcessorSettings, StageSettings, TrainingConfig

FRAME_CACHE_FOLDER = "frame-cache"  # the run's frame cache, OUTPUT_DIR/frame-cache, unless --frame-cache says otherwise
NO_FRAME_CACHE = ("none", "off")  # --frame-cache none: decode every clip

DEFAULT_FUSION_WIDTH = 768  # the paper's H, where no audio encoder sets it

logger = logging.getLogger(__name__)


class StageInputs:
    """The run's resolved inputs; conversations and processor are read on first use and kept."""

    def __init__(self, config: TrainingConfig):
        self.config = config
        self.recipe = load_recipe(config.recipe)
        self.output_dir = Path(config.output_dir)
        self._conversations, self._processor, self._frame_cache = {}, None, None  # read on first use

    def settings(self, stage: str) -> StageSettings:
        return self.recipe.stage_settings(stage, self.config.stage_overrides(stage))

    def model_settings(self) -> ModelSettings:  # the recipe's, with the run's (those set) on top
        return replace(self.recipe.model, **self.config.model.given())

    def processor_settings(self) -> ProcessorSettings:
        return replace(self.recipe.processor, **self.config.processor_settings.given())

    def output_folder(self, stage: str) -> Path:
        """Where `stage` writes: its folder under the output folder (features: `--features` when given)."""
        if stage == "extract-features" and self.config.features:
            return Path(self.config.features)
        return self.output_dir / STAGES[stage].folder

    def input_folder(self, stage: str, needed_by: str) -> Path:
        """Where `stage`'s output is read from (`--audio-model DIR` and the like, else its output folder), checked."""
        given = getattr(self.config, f"{stage.replace('-', '_')}_model", None)
        folder = Path(given) if given else self.output_folder(stage)
        if not (folder / "config.json").is_file() and not (folder / "dataset_dict.json").is_file():
            flag = "--features" if stage == "extract-features" else f"--{stage}-model"
            raise FileNotFoundError(
                f"stage {needed_by!r} needs the output of stage {stage!r} in {folder}, which holds no model or "
                f"dataset: run `magtkd-hf train {stage}` first or point to it ({flag} DIR)"
            )
        return folder

    def conversations(self, check_media: bool = True):
        """The run's conversations (`--data`), with `--train-dialogues` applied. `check_media=False` (a stage that
        reads no audio or video) builds a release folder from its label files alone."""
        if check_media in self._conversations:
            return self._conversations[check_media]
        if not self.config.data:
            raise ValueError("stages 1-3 need --data: a MELD/IEMOCAP release folder or a saved DatasetDict")
        splits = load_conversations(self.config.data, self.recipe.dataset, self.config.on_missing, check_media)
        missing = [split for split in ("train", "validation") if split not in splits]
        if missing:
            raise ValueError(f"--data {self.config.data}: splits {missing} are missing")
        if getattr(self.processor(), "speaker_mode", None) == "released_iemocap":
            splits = with_running_speakers(splits)
        if self.config.train_dialogues is not None:
            splits["train"] = part_of_split(splits["train"], self.config.train_dialogues, self.recipe.seed)
        self._conversations[check_media] = splits
        return splits

    def encoder(self, modality: str) -> str:
        name = getattr(self.config, f"{modality}_encoder") or self.recipe.encoders.get(modality)
        if not name:
            raise ValueError(f"no {modality} encoder: give --{modality}-encoder (a Hub name or a folder)")
        return name

    def encoder_config(self, modality: str):
        name = self.encoder(modality)
        try:
            return AutoConfig.from_pretrained(name, **self.recipe.encoder_config_overrides.get(modality, {}))
        except (OSError, ValueError) as error:
            hint = "" if modality == "text" else ", or --modalities text for a run from transcripts alone"
            raise OSError(f"the {modality} encoder {name!r} could not be loaded ({error}); give a local folder with "
                          f"--{modality}-encoder{hint}") from error

    def fusion_width(self) -> int:
        """The width of the fusion's features: `hidden_size`, else the audio encoder's (its features enter the fusion
        unprojected), else `DEFAULT_FUSION_WIDTH`."""
        given = self.model_settings().hidden_size
        if given:
            return int(given)
        if "audio" in self.config.modalities:
            return int(self.encoder_config("audio").hidden_size)
        return DEFAULT_FUSION_WIDTH

    def processor(self):
        """--processor, else OUT/processor, else built from the run's encoders (and saved to OUT/processor for the
        later stages)."""
        if self._processor is None:
            self._processor = self._load_or_build_processor()
            check_processor_settings(self._processor, self.processor_settings())
        return self._processor

    def _load_or_build_processor(self):
        saved = self.output_dir / "processor"
        if self.config.processor:
            return MagtkdProcessor.from_pretrained(self.config.processor)
        if (saved / "processor_config.json").is_file():
            return MagtkdProcessor.from_pretrained(str(saved))
        modalities = self.config.modalities
        video_size = int(getattr(self.encoder_config("video"), "image_size", 224)) if "video" in modalities else 224
        processor = MagtkdProcessor.from_encoders(
            self.encoder("text"), self.encoder("audio") if "audio" in modalities else None, video_size=video_size,
            **self.processor_settings().given(),
        )
        if PartialState().is_main_process:
            processor.save_pretrained(str(saved))
        return processor

    def frame_cache_folder(self) -> Path | None:
        """--frame-cache DIR, else OUTPUT_DIR/frame-cache; None with --frame-cache none."""
        given = self.config.frame_cache
        if given is not None and str(given).strip().lower() in NO_FRAME_CACHE:
            return None
        return Path(given) if given else self.output_dir / FRAME_CACHE_FOLDER

    def frame_cache(self):
        """The run's `FrameCache` (opened once), or None: none there, or one built with other frame settings than the
        processor's (a warning says so). A --frame-cache folder without a cache raises `FileNotFoundError`."""
        if self._frame_cache is None:
            self._frame_cache = self._open_frame_cache() or False  # False: looked for, none usable
        return self._frame_cache or None

    def _open_frame_cache(self):
        folder = self.frame_cache_folder()
        if folder is None:
            return None
        if not (folder / METADATA_FILE).is_file():
            if self.config.frame_cache:
                raise FileNotFoundError(f"--frame-cache {folder}: no frame cache there (no {METADATA_FILE}); build it "
                                        "with `magtkd-hf cache-frames`, or pass --frame-cache none")
            return None
        cache = FrameCache(folder)
        differences = cache.differences(self.processor())
        if differences:
            logger.warning("frame cache %s was built with other frame settings (%s differ from the processor's): not "
                           "used, clips are decoded; rebuild it with `magtkd-hf cache-frames`", folder,
                           ", ".join(differences))
            return None
        return cache

    def media_processor(self, modality: str):
        """The processor a collator calls for `modality`: for video (and extract-features, `"all"`) a copy that reads
        the run's frame cache, when there is one (the processor saved beside the models stays the run's own)."""
        processor = self.processor()
        if modality not in ("video", "all"):
            return processor
        cache = self.frame_cache()
        return processor if cache is None else processor.with_frame_cache(cache)


def with_running_speakers(splits):
    """The processor's "released_iemocap" speaker mode numbers speakers by a list that runs through a whole split in
    its order: each split gets the `previous_speakers` column of that order (where it lacks one), so that shuffled
    batches, single utterances and processes that share out conversations number them as the split does."""
    return datasets.DatasetDict({
        split: dataset if "previous_speakers" in dataset.column_names else
        dataset.add_column("previous_speakers", released_iemocap_previous_speakers(dataset["speakers"]))
        for split, dataset in splits.items()
    })


def part_of_split(dataset, dialogues: float, seed: int):
    """`dialogues` (a number >= 1, or a fraction < 1) of a split's conversations, drawn with `seed`, in split order."""
    count = int(dialogues) if dialogues >= 1 else max(1, round(dialogues * len(dataset)))
    if count > len(dataset):
        raise ValueError(f"train_dialogues {dialogues}: the train split has {len(dataset)} dialogues")
    chosen = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False)
    return dataset.select(sorted(chosen.tolist()))


def check_processor_settings(processor, settings) -> None:
    """Refuse a saved processor whose prompt settings differ from those the run asks for."""
    different = {name: (getattr(processor, name), value) for name, value in settings.given().items()
                 if getattr(processor, name) != value}
    if different:
        described = ", ".join(f"{name} {saved!r} (asked: {asked!r})" for name, (saved, asked) in different.items())
        raise ValueError(f"the run's processor has {described}: its stages were built with it; give another "
                         "--output-dir, or --processor with the settings you want")
