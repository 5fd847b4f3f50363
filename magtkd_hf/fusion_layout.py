"""Where a batch's utterances sit (`ConversationLayout`: packed (U, H) utterances, the (B, N) grid, the attention
masks), their sinusoidal positions, and the export-friendly input check. Travels with the fusion's modeling code."""

import math

import torch

def sinusoidal_positions(positions: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """P[pos, 2i] = sin(pos / 10000^(2i/dim)), P[pos, 2i+1] = cos(...): `positions` (U,) -> (U, dim)."""
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = positions.to(torch.float32)[:, None] * frequencies[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1).to(dtype)


class ConversationLayout:
    """
    Where the U real utterances of a batch sit in its (B, N) grid. Position-wise layers run on the packed (U, D)
    utterances only, so padding costs nothing; attention runs on the (B, N) grid with padded keys masked out.
    """

    def __init__(self, attention_mask: torch.Tensor, causal: bool = False):
        self.batch_size, self.max_length = attention_mask.shape
        mask = attention_mask.bool()
        self.flat_index = mask.flatten().nonzero().squeeze(1)  # (U,)
        self.positions = self.flat_index % self.max_length  # (U,)
        self.key_mask = mask[:, None, None, :]  # (B, 1, 1, N), True = a real utterance to attend to
        if causal:  # (B, 1, N, N): query i sees keys j <= i; every row keeps key 0, a real utterance
            earlier = torch.ones(self.max_length, self.max_length, dtype=torch.bool, device=mask.device).tril()
            self.key_mask = self.key_mask & earlier

    def repeated(self, times: int) -> "ConversationLayout":
        """The layout of `times` copies of the batch stacked along the batch dimension."""
        copy = object.__new__(ConversationLayout)
        copy.batch_size, copy.max_length = self.batch_size * times, self.max_length
        offsets = torch.arange(times, device=self.flat_index.device) * (self.batch_size * self.max_length)
        copy.flat_index = (self.flat_index[None, :] + offsets[:, None]).flatten()
        copy.positions = self.positions.repeat(times)
        copy.key_mask = self.key_mask.repeat(times, 1, 1, 1)
        return copy

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """(U, D) -> (B, N, D), zeros at padding."""
        padded = packed.new_zeros(self.batch_size * self.max_length, packed.shape[-1])
        padded = padded.index_copy(0, self.flat_index, packed)
        return padded.view(self.batch_size, self.max_length, -1)

    def to_packed(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (U, D)."""
        return padded.reshape(self.batch_size * self.max_length, -1).index_select(0, self.flat_index)


def check_all(condition: torch.Tensor, message) -> None:
    """Raise `ValueError(message())` unless every element of `condition` holds. Under `torch.export`/`torch.compile`
    the check becomes a runtime assertion instead of a data-dependent branch, so the model stays exportable."""
    if torch.compiler.is_compiling():
        torch._check_tensor_all(condition, message)
    elif not bool(condition.all()):
        raise ValueError(message())
