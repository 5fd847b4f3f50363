"""What the stages of one run share, resolved from its [`TrainingConfig`]: the recipe, the stage folders, the
conversations and the processor (read once), the encoders and their configs."""

from __future__ import annotations

from pathlib import Path

from .data import load_conversations
from .recipe import load_recipe
from .settings import ModelSettings, StageSettings, TrainingConfig

# Each stage's folder under the run's output folder (the features folder keeps its short name).
STAGE_FOLDERS = {
    "text": "text", "audio": "audio", "video": "video", "distill-audio": "distill-audio",
    "distill-video": "distill-video", "extract-features": "features", "fusion": "fusion",
}


class StageInputs:
    """The run's resolved inputs; conversations and processor are read on first use and kept."""

    def __init__(self, config: TrainingConfig):
        self.config = config
        self.recipe = load_recipe(config.recipe)
        self.output_dir = Path(config.output_dir)
        self._conversations = None
        self._processor = None

    # -- settings
    def settings(self, stage: str) -> StageSettings:
        return self.recipe.stage_settings(stage, self.config.stage_overrides(stage))

    def model_settings(self) -> ModelSettings:
        return self.recipe.model_settings(self.config.model)

    # -- folders
    def output_folder(self, stage: str) -> Path:
        """Where `stage` writes: its folder under the output folder (features: `--features` when given)."""
        if stage == "extract-features" and self.config.features:
            return Path(self.config.features)
        return self.output_dir / STAGE_FOLDERS[stage]

    def input_folder(self, stage: str, needed_by: str) -> Path:
        """Where `stage`'s output is read from (a folder given for it, else its output folder), checked."""
        given = self.config.stage_folder_override(stage)
        folder = Path(given) if given else self.output_folder(stage)
        if not (folder / "config.json").is_file() and not (folder / "dataset_dict.json").is_file():
            flag = "--features" if stage == "extract-features" else f"--{stage}-model"
            raise FileNotFoundError(
                f"stage {needed_by!r} needs the output of stage {stage!r} in {folder}, which holds no model or "
                f"dataset: run `magtkd-hf train {stage}` first or point to it ({flag} DIR)"
            )
        return folder

    # -- data, encoders, processor
    def conversations(self):
        if self._conversations is None:
            if not self.config.data:
                raise ValueError("stages 1-3 need --data: a MELD/IEMOCAP release folder or a saved DatasetDict")
            self._conversations = load_conversations(self.config.data, self.recipe.dataset, self.config.on_missing)
            missing = [split for split in ("train", "validation") if split not in self._conversations]
            if missing:
                raise ValueError(f"--data {self.config.data}: splits {missing} are missing")
        return self._conversations

    def encoder(self, modality: str) -> str:
        name = getattr(self.config, f"{modality}_encoder") or self.recipe.encoders.get(modality)
        if not name:
            raise ValueError(f"no {modality} encoder: give --{modality}-encoder (a Hub name or a folder)")
        return name

    def encoder_overrides(self, modality: str) -> dict:
        """The recipe's changes to an encoder's config (e.g. the released audio masking length)."""
        return dict(self.recipe.encoder_config_overrides.get(modality, {}))

    def encoder_config(self, modality: str):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.encoder(modality), **self.encoder_overrides(modality))

    def fusion_width(self) -> int:
        """The width of the features the fusion reads: the audio encoder's (the audio and video features enter the
        fusion unprojected), unless the model settings name one."""
        return int(self.model_settings().hidden_size or self.encoder_config("audio").hidden_size)

    def processor(self):
        """--processor, else OUT/processor, else built from the text and audio encoders (and saved to OUT/processor
        for the later stages)."""
        if self._processor is None:
            self._processor = self._load_or_build_processor()
        return self._processor

    def _load_or_build_processor(self):
        from accelerate import PartialState

        from .. import MagtkdProcessor

        saved = self.output_dir / "processor"
        if self.config.processor:
            return MagtkdProcessor.from_pretrained(self.config.processor)
        if (saved / "processor_config.json").is_file():
            return MagtkdProcessor.from_pretrained(str(saved))
        video_size = int(getattr(self.encoder_config("video"), "image_size", 224))
        processor = MagtkdProcessor.from_encoders(self.encoder("text"), self.encoder("audio"), video_size=video_size)
        if PartialState().is_main_process:
            processor.save_pretrained(str(saved))
        return processor
