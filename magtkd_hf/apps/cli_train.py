"""`magtkd-hf train STAGE`: its options are the fields of the settings dataclasses (magtkd_hf/training/settings.py)."""

from dataclasses import fields
from pathlib import Path

from accelerate import PartialState

from ..training import run_all, run_stage
from ..training.settings import (STAGES, ModelSettings, ProcessorSettings, RunSettings, StageSettings, TrainingConfig,
                                 parse_set_options)


def add_train_command(subparsers) -> None:
    stages = (*STAGES, "all")
    parser = subparsers.add_parser(
        "train",
        dataclass_types=(RunSettings, ProcessorSettings, ModelSettings, StageSettings),
        help=f"train a stage of the MAGTKD recipe ({'|'.join(stages)})",
        description="Runs one stage of the MAGTKD recipe with the settings of --recipe, then the options below (every "
        "stage), then --set STAGE.KEY=VALUE (one stage), writing OUTPUT_DIR/<stage>/ (a save_pretrained folder, "
        "metrics.json, confusion_matrix.png, checkpoints/epoch_K/). Each stage reads the earlier stages' folders under "
        "OUTPUT_DIR. Stages: "
        + "; ".join(f"{spec.name} ({spec.description})" for spec in STAGES.values())
        + "; all (every stage, then OUTPUT_DIR/model, the end-to-end model). Model selection uses dev weighted F1 "
        "only; test is evaluated once, on the selected model. Runs under `accelerate launch -m magtkd_hf train ...` "
        "(or `python -m torch.distributed.run --nproc_per_node N -m magtkd_hf train ...` on CPU).",
    )
    parser.add_argument("stage", choices=stages, metavar="STAGE", help=", ".join(stages))
    parser.add_argument("--set", action="append", default=[], metavar="[STAGE.]KEY=VALUE", dest="set_options",
                        help="any stage setting, for one stage (fusion.epochs=5) or all (epochs=5, as the option), or "
                        "a fusion model setting (fusion.causal=true); repeatable")
    # Not given: the recipe decides.
    parser.set_defaults(func=_run_train, **{item.name: None for cls in (ProcessorSettings, ModelSettings, StageSettings)
                                            for item in fields(cls)})


def training_config_from_args(args):
    """The parsed `train` options -> a `TrainingConfig` (`--set STAGE.KEY=VALUE`: one stage's setting)."""

    def given(cls) -> dict:  # the options given (not None: the recipe decides)
        return {item.name: getattr(args, item.name) for item in fields(cls) if getattr(args, item.name) is not None}

    overrides, model = parse_set_options(args.set_options), given(ModelSettings)
    model_names = {item.name for item in fields(ModelSettings)}
    for stage in ("*", "fusion"):  # `--set [fusion.]causal=true`: a fusion model setting, set like a stage's
        model.update({key: overrides[stage].pop(key) for key in list(overrides.get(stage, {})) if key in model_names})
    overrides["*"] = {**overrides.get("*", {}), **given(StageSettings)}
    return TrainingConfig(**given(RunSettings), model=ModelSettings(**model),
                          processor_settings=ProcessorSettings(**given(ProcessorSettings)), overrides=overrides)


def _run_train(args) -> None:
    config = training_config_from_args(args)
    try:
        result = run_all(config) if args.stage == "all" else run_stage(args.stage, config)
    finally:  # the stages of a call share one process group: it ends here
        PartialState().wait_for_everyone()
        PartialState().destroy_process_group()
    if PartialState().is_main_process:
        _print_train_summary(args.stage, result, Path(config.output_dir))


def _print_train_summary(stage: str, result: dict, output_dir: Path) -> None:
    for name, metrics in (result if stage == "all" else {stage: result}).items():
        if not isinstance(metrics, dict):
            line = metrics
        elif "stopped_after_epoch" in metrics:
            line = f"stopped after epoch {metrics['stopped_after_epoch']}; continue with --resume"
        elif "skipped" in metrics:
            line = metrics["skipped"]
        elif "selected_epoch" in metrics:
            dev, test = metrics["validation"], metrics.get("test")
            line = f"selected epoch {metrics['selected_epoch']}, dev weighted F1 {dev['weighted_f1']:.2f}"
            if test:
                line += f", test weighted F1 {test['weighted_f1']:.2f}, accuracy {test['accuracy']:.2f}"
        else:
            line = metrics.get("conversations", metrics)
        print(f"{name}: {line}")
    print(f"Outputs in {output_dir}")
