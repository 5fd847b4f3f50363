"""What batch invariance costs the audio encoder: data2vec-audio (base, random weights) on one conversation's
waveforms of different lengths, (a) right-padded into one batch with an attention mask, as before (the padding leaks
into the real frames through the positional convolution, so a feature depends on its batch-mates), against (b) each
utterance at its exact length, as `MagtkdAudioEncoder` computes it now. Side by side, best of `--repeats`.

    python benchmarks/audio_batching.py --seconds 1 2 3 4 6 --dtype bfloat16
"""

import argparse
import time

import torch
from transformers import Data2VecAudioConfig, Data2VecAudioModel


def best_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[1, 2, 3, 4, 6])
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = Data2VecAudioModel(Data2VecAudioConfig()).eval().to(dtype)
    waves = [torch.randn(int(16000 * seconds)).to(dtype) for seconds in args.seconds]
    longest = max(len(wave) for wave in waves)
    padded = torch.zeros(len(waves), longest, dtype=dtype)
    mask = torch.zeros(len(waves), longest, dtype=torch.long)
    for row, wave in enumerate(waves):
        padded[row, : len(wave)], mask[row, : len(wave)] = wave, 1
    with torch.inference_mode():
        batched = best_seconds(lambda: model(padded, attention_mask=mask), args.repeats)
        alone = best_seconds(lambda: [model(wave[None]) for wave in waves], args.repeats)
        first_batched = model(padded, attention_mask=mask).last_hidden_state[:, 0].float()
        first_alone = torch.cat([model(wave[None]).last_hidden_state[:, 0] for wave in waves]).float()
    print(f"data2vec-audio base, {args.dtype}, {args.threads} threads, utterances of {args.seconds} s")
    print(f"(a) padded batch: {batched:.2f} s   (b) each alone (batch-invariant): {alone:.2f} s   "
          f"(b)/(a) = {alone / batched:.2f}")
    print(f"first-frame feature, (a) against (b): max abs diff {float((first_batched - first_alone).abs().max()):.3f}")


if __name__ == "__main__":
    main()
