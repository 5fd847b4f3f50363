"""`magtkd-hf cache-frames`: decode every clip of a dataset once into the run's frame cache (processors/frame_cache.py),
which the video stages and extract-features then read instead of decoding the clips every epoch."""

import os
import sys


def add_cache_frames_command(subparsers) -> None:
    """`cache-frames --output-dir OUT --data DATA`: the frame cache of OUT's processor in OUT/frame-cache."""
    parser = subparsers.add_parser(
        "cache-frames",
        help="decode every video clip once into the run's frame cache (read by the video stages and extract-features)",
        description="Decodes the video clip of every utterance of --data (every split) once, with the processor the "
        "run uses (as `train` does), and stores the kept frames after the resize and center crop (uint8, a .npy file "
        "per clip) in OUTPUT_DIR/frame-cache (or --frame-cache DIR), which `train video`, `train distill-video` and "
        "`train extract-features` then read instead of decoding, with the same pixel values. A changed clip is decoded "
        "again; a cache of other frame settings is rebuilt here (and ignored by training, with a warning). "
        "Incremental: a second call adds only the clips missing.",
    )
    parser.add_argument("--output-dir", required=True, help="the run's folder (its processor, its frame-cache/)")
    parser.add_argument("--data", required=True, help="a MELD/IEMOCAP release folder or a saved DatasetDict")
    parser.add_argument("--recipe", default="meld",
                        help="'meld', 'iemocap' or a recipe JSON file: the dataset and default encoders (%(default)s)")
    parser.add_argument("--processor", help="a saved MagtkdProcessor (default: OUTPUT_DIR/processor, else built "
                        "from the encoders)")
    for modality in ("text", "audio", "video"):
        parser.add_argument(f"--{modality}-encoder", help=f"pretrained {modality} encoder (default: the recipe's)")
    parser.add_argument("--on-missing", choices=("raise", "drop"), default="raise",
                        help="building from a release folder: missing clips raise, or are dropped")
    parser.add_argument("--frame-cache", metavar="DIR", help="the cache folder (default: OUTPUT_DIR/frame-cache)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes decoding clips (DataLoader workers; 0: this process; default %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="empty the cache folder first")
    parser.set_defaults(func=run_cache_frames)


def run_cache_frames(args) -> int:
    from ..training import TrainingConfig
    from ..training.inputs import NO_FRAME_CACHE

    if args.frame_cache is not None and args.frame_cache.strip().lower() in NO_FRAME_CACHE:
        raise ValueError(f"--frame-cache {args.frame_cache}: name the folder to build the cache in")
    config = TrainingConfig(
        output_dir=args.output_dir, recipe=args.recipe, data=args.data, on_missing=args.on_missing,
        processor=args.processor, text_encoder=args.text_encoder, audio_encoder=args.audio_encoder,
        video_encoder=args.video_encoder, frame_cache=args.frame_cache,
    )
    print_cache_summary(cache_run_frames(config, args.num_workers, rebuild=args.rebuild), args.num_workers)
    return 0


def cache_run_frames(config, num_workers: int = 0, rebuild: bool = False, progress: bool = True) -> dict:
    """Build the frame cache of a run (a `TrainingConfig`): its processor, its conversations, its cache folder
    (`StageInputs.frame_cache_folder`), the time-window choices of its video stages and of extract-features.
    Returns `build_frame_cache`'s summary."""
    from ..processors.frame_cache import build_frame_cache
    from ..training import StageInputs
    from ..training.stages import utterance_items

    inputs = StageInputs(config)
    # The utterances and the time-window choice of the video stages (and "auto", extract-features' choice).
    items, use_time_window = utterance_items(inputs)
    rows = [row for split_items in items.values() for row in split_items.rows]
    return build_frame_cache(
        rows, inputs.processor(), inputs.frame_cache_folder(), window_choices=(use_time_window, "auto"),
        num_workers=num_workers, rebuild=rebuild, progress=progress,
    )


def print_cache_summary(summary: dict, num_workers: int) -> None:
    """Where the cache is, its clips, bytes per clip and the seconds taken; failures on stderr."""
    state = {"new": "new", "kept": "added to", "rebuilt": "rebuilt"}[summary["folder_state"]]
    changed = summary["changed_settings"] if summary["folder_state"] == "rebuilt" else []
    reason = f" (other frame settings: {', '.join(changed)})" if changed else ""
    print(f"Frame cache: {summary['folder']} ({state}{reason})")
    failed = summary["failed"]
    print(f"  clips cached: {summary['clips']} ({summary['added']} decoded now, {summary['reused']} already there, "
          f"{len(failed)} failed)")
    print(f"  bytes per clip: {summary['frame_bytes_per_clip']:,.0f} of frames "
          f"({summary['frame_bytes_per_clip'] / 2**20:.2f} MiB), {summary['disk_bytes_per_clip']:,.0f} on disk")
    print(f"  seconds: {summary['seconds']:.1f} ({num_workers} worker{'s' if num_workers != 1 else ''})")
    for message in failed[:20]:
        print(f"  not cached: {message}", file=sys.stderr)
    if failed:
        more = f"... and {len(failed) - 20} more not cached; " if len(failed) > 20 else ""
        print(f"  ({more}training decodes these clips and reports their errors as it would without a cache)",
              file=sys.stderr)
