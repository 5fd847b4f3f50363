"""A small real fusion job: `MagtkdFusionModel` on synthetic features holding faint class prototypes under noise,
emotions persisting between turns, so the fusion has to combine modalities and context to beat chance."""

from itertools import chain, islice, repeat
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModel, get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..configuration_magtkd import MagtkdFusionConfig
from ..features import FusionFeatureCollator, conversation_lengths, feature_dataset_features
from ..metrics import classification_metrics
from ..modeling_magtkd_fusion import MagtkdFusionModel

_SIGNAL = {"text": 0.2, "audio": 0.1, "video": 0.1, "audio_kd": 0.12, "video_kd": 0.12}


def synthetic_feature_split(num_conversations: int, hidden_size: int, prototypes: dict, rng: np.random.Generator,
                            prefix: str) -> datasets.Dataset:
    """Conversations of 2-12 utterances in the stage-3 features schema (see module docstring)."""
    num_labels = next(iter(prototypes.values())).shape[0]
    label_names = MagtkdFusionConfig().label_names[:num_labels]  # the fusion's default classes
    schema = feature_dataset_features(hidden_size, label_names)
    rows = {column: [] for column in schema}
    for conversation in range(num_conversations):
        length = int(rng.integers(2, 13))
        labels = [int(rng.integers(num_labels))]
        for _ in range(length - 1):
            labels.append(labels[-1] if rng.random() < 0.5 else int(rng.integers(num_labels)))
        rows["dialogue_id"].append(f"{prefix}{conversation}")
        rows["utterance_ids"].append([str(index) for index in range(length)])
        for source, strength in _SIGNAL.items():
            noise = rng.standard_normal((length, hidden_size)).astype(np.float32)
            rows[source].append(strength * prototypes[source][labels] + noise)
        rows["speaker_ids"].append([int(speaker) for speaker in rng.integers(0, 3, length)])
        rows["labels"].append(labels)
    return datasets.Dataset.from_dict(rows, features=schema)


def synthetic_feature_splits(hidden_size: int = 64, num_labels: int = 7, seed: int = 0) -> datasets.DatasetDict:
    rng = np.random.default_rng(seed)
    prototypes = {source: rng.standard_normal((num_labels, hidden_size)).astype(np.float32) for source in _SIGNAL}
    return datasets.DatasetDict({split: synthetic_feature_split(size, hidden_size, prototypes, rng, split)
                                 for split, size in {"train": 400, "validation": 80, "test": 80}.items()})


@torch.inference_mode()
def evaluate_fusion(model: MagtkdFusionModel, loader: DataLoader) -> dict:
    """Weighted F1 and accuracy (percent) of `model` over `loader`."""
    model.eval()
    batches = list(loader)
    labels = torch.cat([batch.pop("labels").flatten() for batch in batches]).numpy()
    predictions = torch.cat([model(**batch).logits.argmax(-1).flatten() for batch in batches]).numpy()
    metrics = classification_metrics(labels, predictions, model.config.label_names)
    return {"weighted_f1": metrics["weighted_f1"], "accuracy": metrics["accuracy"]}


def run_fusion_demo(output_dir: str | Path, steps: int = 300, eval_every: int = 50, seed: int = 0) -> dict:
    """Train, evaluate on dev every `eval_every` steps, keep the best dev model, test it, save and reload it."""
    torch.manual_seed(seed)
    splits = synthetic_feature_splits(seed=seed).with_format("numpy")
    model = MagtkdFusionModel(MagtkdFusionConfig(hidden_size=64, num_attention_heads=4, intermediate_size=64,
                                                 dropout=0.1))
    collator = FusionFeatureCollator.from_config(model.config)
    sampler = LengthGroupedSampler(16, lengths=conversation_lengths(splits["train"]),
                                   generator=torch.Generator().manual_seed(seed))
    train_loader = DataLoader(splits["train"], batch_size=16, sampler=sampler, collate_fn=collator)
    dev_loader, test_loader = (DataLoader(splits[split], batch_size=32, collate_fn=collator)
                               for split in ("validation", "test"))
    history, best_f1, best_state = train_fusion(model, train_loader, dev_loader, steps, eval_every)
    model.load_state_dict(best_state)
    test = evaluate_fusion(model, test_loader)
    model.save_pretrained(output_dir)
    same = evaluate_fusion(AutoModel.from_pretrained(output_dir), dev_loader)["weighted_f1"] == best_f1
    return {"history": history, "best_dev_weighted_f1": best_f1, "test": test, "reload_matches": same}


def train_fusion(model, train_loader: DataLoader, dev_loader: DataLoader, steps: int, eval_every: int):
    """`steps` AdamW steps -> (the dev history, the best dev weighted F1, the state dict that reached it)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=steps // 10, num_training_steps=steps)
    history = [{"step": 0, **evaluate_fusion(model, dev_loader)}]
    best_f1, best_state = -1.0, None
    progress = tqdm(islice(chain.from_iterable(repeat(train_loader)), steps), total=steps, desc="fusion demo")
    for step, batch in enumerate(progress, start=1):
        model.train()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if step % eval_every == 0 or step == steps:
            dev = evaluate_fusion(model, dev_loader)
            history.append({"step": step, "loss": loss.item(), **dev})
            if dev["weighted_f1"] > best_f1:
                best_f1, best_state = dev["weighted_f1"], {k: v.clone() for k, v in model.state_dict().items()}
    return history, best_f1, best_state


def print_fusion_demo_report(result: dict, output_dir: str | Path) -> None:
    print(f"\nFusion demo: dev weighted F1 over training (chance about {100 / 7:.0f}%)")
    print(f"{'step':>6s} {'loss':>8s} {'dev wF1':>8s} {'dev acc':>8s}")
    for entry in result["history"]:
        loss = f"{entry['loss']:.3f}" if "loss" in entry else "-"
        print(f"{entry['step']:>6d} {loss:>8s} {entry['weighted_f1']:8.1f} {entry['accuracy']:8.1f}")
    test = result["test"]
    print(f"best dev weighted F1 {result['best_dev_weighted_f1']:.1f}; test of that model: weighted F1 "
          f"{test['weighted_f1']:.1f}, accuracy {test['accuracy']:.1f}")
    print(f"saved to {Path(output_dir).resolve()} (reloaded with AutoModel: "
          f"{'same dev F1' if result['reload_matches'] else 'MISMATCH'})")
