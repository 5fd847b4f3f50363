"""Which frames of a video the MAGTKD processor keeps: the uniform rule, and the released
scripts' MELD (whole clip) and IEMOCAP (time window) rules, as 0-based file indices.

Pure arithmetic on frame counts and rates; decoding is in `media.py`.
"""

from __future__ import annotations

import math

from .media_common import TimeWindow


def uniform_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """Centres of `num_frames` equal segments of [0, num_available); repeats frames when the
    clip is shorter than `num_frames`. Empty list when nothing is available."""
    if num_available <= 0:
        return []
    return [min(int((k + 0.5) * num_available / num_frames), num_available - 1) for k in range(num_frames)]


def released_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """The released scripts' rule: step = L // num_frames, keep the frames whose 1-based index
    is a multiple of step, the first `num_frames` of them; with fewer than `num_frames` frames
    keep them all and repeat the last. Returns 0-based indices."""
    if num_available <= 0:
        return []
    if num_available < num_frames:
        kept = list(range(num_available))
    else:
        step = num_available // num_frames
        kept = [position - 1 for position in range(step, num_available + 1, step)][:num_frames]
    return kept + [kept[-1]] * (num_frames - len(kept))


def released_iemocap_frame_indices(
    num_frames_in_file: int, fps: float, window: TimeWindow, num_frames: int = 8
) -> list[int]:
    """The released IEMOCAP video loader's rule, 0-based file indices.

    `window` is the utterance's window already widened (t0 = max(start - 1, 0), t1 = end + 1).
    step = floor(fps * (t1 - t0) / num_frames), from the float window and NOT clipped to the
    file; frames are counted in file order, a frame whose 1-based position p satisfies
    t0 * fps <= p <= t1 * fps increments a counter, and it is kept when counter % step == 0;
    the first `num_frames` kept frames are used, fewer are padded by repeating the last.
    Frames past the file's end do not exist, so a window cut at the end keeps fewer frames
    (with its unclipped step). Empty list when no frame is kept (the released loader then
    failed and dropped the utterance). `window.end=None` means the file's end.

    Raises ValueError when step < 1 (fps * (t1 - t0) < num_frames; the released loader
    divided by zero).
    """
    t0 = window.start
    t1 = num_frames_in_file / fps if window.end is None else window.end
    step = int(fps * (t1 - t0) // num_frames)  # the released float expression, floored
    if step < 1:
        raise ValueError(
            f"the window {window} holds {fps * (t1 - t0):.2f} frame periods at {fps:g} fps, fewer than "
            f"{num_frames}: the released frame rule has no step"
        )
    first = max(math.ceil(t0 * fps), 1)  # integer p >= t0 * fps  <=>  p >= ceil(t0 * fps)
    last = min(math.floor(t1 * fps), num_frames_in_file)
    kept = [position - 1 for position in range(first - 1 + step, last + 1, step)][:num_frames]
    if not kept:
        return []
    return kept + [kept[-1]] * (num_frames - len(kept))


FRAME_SELECTIONS = {"uniform": uniform_frame_indices, "released": released_frame_indices}


def window_frame_range(num_frames_in_file: int, fps: float, window: TimeWindow | None) -> range:
    """0-based indices of the frames inside `window` (the released rule: 1-based frame number
    p with start*fps <= p <= end*fps), clipped to the file."""
    if window is None:
        return range(num_frames_in_file)
    first_position = max(math.ceil(window.start * fps - 1e-9), 1)
    last_position = num_frames_in_file if window.end is None else math.floor(window.end * fps + 1e-9)
    last_position = min(last_position, num_frames_in_file)
    return range(first_position - 1, max(last_position, first_position - 1))


def choose_frames(
    num_frames_in_file: int,
    fps: float,
    num_frames: int = 8,
    selection: str = "uniform",
    window: TimeWindow | None = None,
) -> list[int]:
    """0-based file indices of the `num_frames` kept frames (repeats allowed; empty when
    nothing is kept). `selection="released"` with a window is the released IEMOCAP rule
    (`released_iemocap_frame_indices`), without one the released MELD rule
    (`released_frame_indices`); "uniform" picks segment centres of the window's frames."""
    if selection not in FRAME_SELECTIONS:
        raise ValueError(f"selection must be one of {tuple(FRAME_SELECTIONS)}, got {selection!r}")
    if selection == "released" and window is not None:
        return released_iemocap_frame_indices(num_frames_in_file, fps, window, num_frames)
    available = window_frame_range(num_frames_in_file, fps, window)
    return [available[i] for i in FRAME_SELECTIONS[selection](len(available), num_frames)]
