"""Causal fusion, online evaluation and missing modalities, measured on a learnable synthetic feature set (SYNTHETIC:
not MELD's features; MELD's sizes: 1,039 / 114 / 280 conversations).

Every utterance's emotion carries over from the previous turn half of the time; its text, audio and video features
each hold a class prototype of their own strength under unit noise, so each modality carries part of the label and
context helps. Trained with the package's `MagtkdFusionModel` (hidden 64), the same steps for every variant; dev
weighted F1 of:

* the bidirectional fusion (the paper's), the causal fusion (`causal=True`), and the bidirectional fusion evaluated
  online (utterance i predicted from utterances 0..i only);
* the bidirectional fusion trained without and with modality dropout, evaluated with all modalities, text + audio
  (video missing) and text only.

    python benchmarks/modalities.py --epochs 8
"""

import argparse
import time

import numpy as np
import torch

from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel
from magtkd_hf.metrics import erc_scores

SIZES = {"train": 1039, "validation": 114, "test": 280}
STRENGTH = {"text": 0.12, "audio": 0.1, "video": 0.08}
HIDDEN, LABELS = 64, 7


def synthetic_split(num_conversations: int, prototypes: dict, rng: np.random.Generator) -> list[dict]:
    conversations = []
    for _ in range(num_conversations):
        length = int(rng.integers(2, 25))
        labels = [int(rng.integers(LABELS))]
        for _ in range(length - 1):
            labels.append(labels[-1] if rng.random() < 0.5 else int(rng.integers(LABELS)))
        labels = np.array(labels)
        features = {
            modality: (strength * prototypes[modality][labels] + rng.standard_normal((length, HIDDEN))).astype(np.float32)
            for modality, strength in STRENGTH.items()
        }
        conversations.append({"labels": labels, "speakers": rng.integers(0, 3, length), **features})
    return conversations


def saved_feature_splits(folder: str) -> dict:
    """A stage-3 features folder (e.g. the demo's `magtkd-demo/run/features`) in this script's layout: its text,
    distilled audio and distilled video features (MELD's fusion sources)."""
    import datasets

    splits = {}
    for split, rows in datasets.load_from_disk(folder).with_format("numpy").items():
        splits[split] = [{"labels": row["labels"], "speakers": row["speaker_ids"], "text": row["text"],
                          "audio": row["audio_kd"], "video": row["video_kd"]} for row in rows]
    return splits


def collate(conversations: list[dict]) -> dict:
    length = max(len(c["labels"]) for c in conversations)
    hidden = conversations[0]["text"].shape[-1]
    batch = {f"{m}_features": torch.zeros(len(conversations), length, hidden) for m in STRENGTH}
    batch["speaker_ids"] = torch.zeros(len(conversations), length, dtype=torch.long)
    batch["attention_mask"] = torch.zeros(len(conversations), length, dtype=torch.long)
    batch["labels"] = torch.full((len(conversations), length), -100, dtype=torch.long)
    for row, conversation in enumerate(conversations):
        n = len(conversation["labels"])
        for modality in STRENGTH:
            batch[f"{modality}_features"][row, :n] = torch.from_numpy(conversation[modality])
        batch["speaker_ids"][row, :n] = torch.from_numpy(conversation["speakers"])
        batch["attention_mask"][row, :n] = 1
        batch["labels"][row, :n] = torch.from_numpy(conversation["labels"])
    return batch


def train(splits: dict, epochs: int, seed: int, learning_rate=1e-3, batch_size=16, **config) -> MagtkdFusionModel:
    torch.manual_seed(seed)
    hidden = splits["train"][0]["text"].shape[-1]
    model = MagtkdFusionModel(MagtkdFusionConfig(hidden_size=hidden, num_attention_heads=4, intermediate_size=hidden,
                                                 dropout=0.1, **config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-6)
    generator = torch.Generator().manual_seed(seed)
    train_split = splits["train"]
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_split), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            loss = model(**collate([train_split[i] for i in order[start : start + batch_size]])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.inference_mode()
def dev_f1(model, conversations: list[dict], online: bool = False, missing: tuple[str, ...] = ()) -> float:
    batch = collate(conversations)
    labels = batch.pop("labels")
    for modality in missing:  # the modality is absent: the model's learned missing embedding stands in
        batch[f"{modality}_mask"] = torch.zeros_like(batch["attention_mask"])
    if not online:
        predictions = model(**batch).logits.argmax(-1)
    else:  # utterance i from the prefix 0..i of its conversation
        predictions = torch.zeros_like(labels)
        for end in range(1, labels.shape[1] + 1):
            prefix = {key: value[:, :end] for key, value in batch.items()}
            keep = prefix["attention_mask"][:, -1].bool()
            prefix = {key: value[keep] for key, value in prefix.items()}
            predictions[keep, end - 1] = model(**prefix).logits[:, -1].argmax(-1)
    return erc_scores(predictions, labels)["weighted_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modality-dropout", type=float, default=0.3)
    parser.add_argument("--anchor-residual", action="store_true", help="train every variant with anchor_residual=True")
    parser.add_argument("--features", help="a saved stage-3 features folder (e.g. the demo's) instead of the synthetic "
                        "set; trained with the demo's fusion steps (learning rate 3e-3, 2 conversations a batch)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.features:
        splits, source = saved_feature_splits(args.features), f"features of {args.features}"
        residual = {"anchor_residual": args.anchor_residual, "learning_rate": 3e-3, "batch_size": 2}
    else:
        rng = np.random.default_rng(args.seed)
        prototypes = {modality: rng.standard_normal((LABELS, HIDDEN)).astype(np.float32) for modality in STRENGTH}
        splits = {split: synthetic_split(size, prototypes, rng) for split, size in SIZES.items()}
        source = f"SYNTHETIC features, MELD sizes {SIZES}"
        residual = {"anchor_residual": args.anchor_residual}
    dev = splits["validation"]
    started = time.perf_counter()
    bidirectional = train(splits, args.epochs, args.seed, **residual)
    causal = train(splits, args.epochs, args.seed, causal=True, **residual)
    with_dropout = train(splits, args.epochs, args.seed, modality_dropout=args.modality_dropout, **residual)
    print(f"{source}; anchor_residual={args.anchor_residual}; {args.epochs} epochs each; trained in "
          f"{time.perf_counter() - started:.0f} s. Dev weighted F1 (chance about {100 / LABELS:.0f}):\n")
    print(f"{'fusion':<44}{'dev weighted F1':>16}")
    print(f"{'(a) bidirectional':<44}{dev_f1(bidirectional, dev):>16.1f}")
    print(f"{'(b) causal':<44}{dev_f1(causal, dev):>16.1f}")
    print(f"{'(c) bidirectional, evaluated online':<44}{dev_f1(bidirectional, dev, online=True):>16.1f}")
    print(f"\n{'modalities at evaluation':<28}{'no modality dropout':>22}{f'dropout {args.modality_dropout}':>16}")
    for name, missing in (("text + audio + video", ()), ("text + audio", ("video",)), ("text", ("audio", "video"))):
        print(f"{name:<28}{dev_f1(bidirectional, dev, missing=missing):>22.1f}"
              f"{dev_f1(with_dropout, dev, missing=missing):>16.1f}")


if __name__ == "__main__":
    main()
