"""A `scaled_dot_product_attention` forward for TimeSformer's attention (transformers' `TimesformerSelfAttention`
computes `softmax(q k^T * scale) v` by hand, with no attention interface): the same weights and outputs, through
PyTorch's fused kernels. Travels with the modeling code as remote code."""

import torch.nn.functional as F
from transformers.models.timesformer.modeling_timesformer import TimesformerSelfAttention


class TimesformerSdpaSelfAttention(TimesformerSelfAttention):
    """`TimesformerSelfAttention` through `F.scaled_dot_product_attention`; with `output_attentions=True` the original
    forward (SDPA does not return the weights)."""

    def forward(self, hidden_states, output_attentions: bool = False):
        if output_attentions:
            return super().forward(hidden_states, output_attentions=True)
        batch_size, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
        )
        return (context.transpose(1, 2).reshape(batch_size, length, width),)


def use_sdpa_attention(model) -> int:
    """Switches every `TimesformerSelfAttention` of `model` to the SDPA forward in place (no weight is copied);
    returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is TimesformerSelfAttention:
            module.__class__ = TimesformerSdpaSelfAttention
            switched += 1
    return switched
