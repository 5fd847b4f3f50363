"""`magtkd-hf cache-frames`: decode every clip of a dataset once into the run's frame cache (see frame_cache.py)."""

import sys

from ..processors.frame_cache import build_frame_cache
from ..training import StageInputs, TrainingConfig
from ..training.inputs import NO_FRAME_CACHE
from ..training.stages import utterance_items


def run_cache_frames(args) -> None:
    if args.frame_cache is not None and args.frame_cache.strip().lower() in NO_FRAME_CACHE:
        raise ValueError(f"--frame-cache {args.frame_cache}: name the folder to build the cache in")
    config = TrainingConfig(**{name: getattr(args, name) for name in (
        "output_dir", "recipe", "data", "on_missing", "processor", "text_encoder", "audio_encoder", "video_encoder",
        "frame_cache")})
    print_cache_summary(cache_run_frames(config, args.num_workers, rebuild=args.rebuild), args.num_workers)


def cache_run_frames(config, num_workers: int = 0, rebuild: bool = False, progress: bool = True) -> dict:
    """Build the frame cache of a run (a `TrainingConfig`): `build_frame_cache`'s summary."""
    inputs = StageInputs(config)
    items, use_time_window = utterance_items(inputs)
    rows = [row for split_items in items.values() for row in split_items.rows]
    return build_frame_cache(
        rows, inputs.processor(), inputs.frame_cache_folder(), window_choices=(use_time_window, "auto"),
        num_workers=num_workers, rebuild=rebuild, progress=progress,
    )


def print_cache_summary(summary: dict, num_workers: int) -> None:
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
