"""`MagtkdDataCollator`: a batch of conversations (dataset rows or utterance lists) -> the processor's tensors."""

from collections.abc import Mapping, Sequence

from transformers import BatchFeature

from .configuration_magtkd import MODALITIES


class MagtkdDataCollator:
    """
    Collates conversations for `transformers.Trainer` or a `DataLoader`: the processor reads the media and builds the
    prompts, so with `DataLoader(num_workers>=1)` media decoding runs in the workers, beside the model.

    Args:
        processor ([`MagtkdProcessor`]): turns conversations into tensors.
        modalities (`tuple[str]`, defaults to `("text", "audio", "video")`): the modalities to compute; the others are
            left out of the batch (their media are not read).
        **processor_kwargs: passed on every call (e.g. `use_time_window`).

    Call: a list of dataset rows (`load_meld`/`load_iemocap` rows: `texts`, `speakers`, `video_paths`, `labels`, ...)
    or of conversations (lists of utterance mappings) -> a `BatchFeature` with the processor's keys, `labels` (B, N)
    included when the rows carry labels. Use `TrainingArguments(remove_unused_columns=False)`: the processor needs
    the rows' columns.
    """

    def __init__(self, processor, modalities: Sequence[str] = MODALITIES, **processor_kwargs):
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(modalities)}")
        self.processor = processor
        self.modalities = tuple(modalities)
        self.processor_kwargs = processor_kwargs

    def __call__(self, features: Sequence) -> BatchFeature:
        conversations = list(features)
        if not conversations:
            raise ValueError("MagtkdDataCollator got an empty batch")
        if isinstance(conversations[0], Mapping) and "texts" not in conversations[0]:
            raise ValueError(
                "MagtkdDataCollator expects dataset rows (with 'texts', 'speakers', ...) or conversations (lists of "
                f"utterance mappings); got a mapping with keys {sorted(conversations[0])}."
            )
        return self.processor(conversations, modalities=self.modalities, **self.processor_kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(processor={type(self.processor).__name__}, modalities={self.modalities})"


__all__ = ["MagtkdDataCollator"]
