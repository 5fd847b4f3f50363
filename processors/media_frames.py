"""Which frames of a video the processor keeps, as 0-based file indices: the uniform rule, and the released scripts'
MELD (whole clip) and IEMOCAP (time window) rules."""

from __future__ import annotations

import math


def uniform_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """Centres of `num_frames` equal segments of [0, num_available) (repeats when the clip is shorter)."""
    if num_available <= 0:
        return []
    return [min(int((k + 0.5) * num_available / num_frames), num_available - 1) for k in range(num_frames)]


def released_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """step = L // num_frames, the frames whose 1-based index is a multiple of step, the first `num_frames` of them;
    with fewer frames, all of them and the last repeated."""
    if num_available <= 0:
        return []
    if num_available < num_frames:
        kept = list(range(num_available))
    else:
        step = num_available // num_frames
        kept = [position - 1 for position in range(step, num_available + 1, step)][:num_frames]
    return kept + [kept[-1]] * (num_frames - len(kept))


def released_iemocap_frame_indices(num_frames_in_file: int, fps: float, window, num_frames: int = 8) -> list[int]:
    """The released IEMOCAP loader's rule on a window already widened (t0 = max(start - 1, 0), t1 = end + 1;
    `window.end=None`: the file's end): step = floor(fps * (t1 - t0) / num_frames) from the float window, not clipped
    to the file; a frame whose 1-based position p satisfies t0 * fps <= p <= t1 * fps counts, every step-th counted
    one is kept; the first `num_frames`, the last repeated. Empty when none is kept; ValueError when step < 1 (the
    released loader divided by zero)."""
    t0 = window.start
    t1 = num_frames_in_file / fps if window.end is None else window.end
    step = int(fps * (t1 - t0) // num_frames)
    if step < 1:
        raise ValueError(f"the window {window} holds {fps * (t1 - t0):.2f} frame periods at {fps:g} fps, fewer than "
                         f"{num_frames}: the released frame rule has no step")
    first = max(math.ceil(t0 * fps), 1)  # integer p >= t0 * fps  <=>  p >= ceil(t0 * fps)
    last = min(math.floor(t1 * fps), num_frames_in_file)
    kept = [position - 1 for position in range(first - 1 + step, last + 1, step)][:num_frames]
    return kept + [kept[-1]] * (num_frames - len(kept)) if kept else []


FRAME_SELECTIONS = {"uniform": uniform_frame_indices, "released": released_frame_indices}


def window_frame_range(num_frames_in_file: int, fps: float, window) -> range:
    """0-based indices of the frames inside `window` (1-based p with start * fps <= p <= end * fps), in the file."""
    if window is None:
        return range(num_frames_in_file)
    first = max(math.ceil(window.start * fps - 1e-9), 1)
    last = num_frames_in_file if window.end is None else math.floor(window.end * fps + 1e-9)
    return range(first - 1, max(min(last, num_frames_in_file), first - 1))


def choose_frames(num_frames_in_file: int, fps: float, num_frames: int = 8, selection: str = "uniform",
                  window=None) -> list[int]:
    """0-based file indices of the kept frames (repeats allowed; empty when none). "released" is the released IEMOCAP
    rule with a window, the released MELD rule without; "uniform" takes segment centres of the window's frames."""
    if selection not in FRAME_SELECTIONS:
        raise ValueError(f"selection must be one of {tuple(FRAME_SELECTIONS)}, got {selection!r}")
    if selection == "released" and window is not None:
        return released_iemocap_frame_indices(num_frames_in_file, fps, window, num_frames)
    available = window_frame_range(num_frames_in_file, fps, window)
    return [available[i] for i in FRAME_SELECTIONS[selection](len(available), num_frames)]
