"""An independent, functional computation of the released fusion model (spec section 6) straight from a state dict in
the released layout (spec section 7), in eval mode, written with plain tensor operations on the padded (B, N) grid."""

import math

import torch
import torch.nn.functional as F

ENCODERS = ("t_t", "a_t", "v_t", "a_a", "t_a", "v_a", "v_v", "t_v", "a_v")
RELEASED_PADDING_SPEAKER = 2


def make_released_state_dict(hidden, heads, num_labels, num_speakers, seed=0):
    """Random values under every key of a released `multimodal_fusion_best.bin`, unused ones included."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        scale = scale if scale is not None else 1 / math.sqrt(shape[-1])
        return torch.randn(*shape, generator=generator) * scale

    state = {"speaker_embeddings.weight": rand(num_speakers + 1, hidden, scale=0.1)}
    for encoder in ENCODERS:
        prefix = f"{encoder}.transformer_inter.0."
        state[f"{encoder}.pos_emb.pe"] = torch.zeros(1, 512, hidden)
        for name in ("self_attn.proj_q", "self_attn.proj_k", "self_attn.proj_v", "self_attn.fc",
                     "feed_forward.w_1", "feed_forward.w_2"):
            state[prefix + name + ".weight"] = rand(hidden, hidden)
            state[prefix + name + ".bias"] = rand(hidden, scale=0.1)
        for norm in ("feed_forward.layer_norm", "layer_norm"):
            state[prefix + norm + ".weight"] = 1 + rand(hidden, scale=0.1)
            state[prefix + norm + ".bias"] = rand(hidden, scale=0.1)
        state[f"{encoder}_gate.fc.weight"] = rand(hidden, hidden)
        state[f"{encoder}_gate.fc.bias"] = rand(hidden, scale=0.1)
    for modality in "tav":
        state[f"features_reduce_{modality}.weight"] = rand(hidden, 3 * hidden)
        state[f"features_reduce_{modality}.bias"] = rand(hidden, scale=0.1)
        state[f"w_{modality}.weight"] = rand(num_labels, hidden)
        state[f"w_{modality}.bias"] = rand(num_labels, scale=0.1)
    state["fc.weight"] = rand(hidden, 3 * hidden)
    state["fc.bias"] = rand(hidden, scale=0.1)
    return state


def _positions(length, hidden):
    table = torch.zeros(length, hidden)
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden))
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


def _linear(state, name, x):
    return x @ state[name + ".weight"].T + state[name + ".bias"]


def _block(state, encoder, query_source, key_value_source, embedding, mask, heads):
    prefix = f"{encoder}.transformer_inter.0."
    query_in = query_source + embedding
    key_value_in = key_value_source + embedding
    batch, length, hidden = query_in.shape
    head_dim = hidden // heads

    def split(x):
        return x.view(batch, length, heads, head_dim).transpose(1, 2)

    q = split(_linear(state, prefix + "self_attn.proj_q", query_in)) / math.sqrt(head_dim)
    k = split(_linear(state, prefix + "self_attn.proj_k", key_value_in))
    v = split(_linear(state, prefix + "self_attn.proj_v", key_value_in))
    scores = (q @ k.transpose(2, 3)).masked_fill(~mask.bool()[:, None, None, :], -1e9)
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
    residual = _linear(state, prefix + "self_attn.fc", context) + query_in
    normed = F.layer_norm(residual, (hidden,), state[prefix + "feed_forward.layer_norm.weight"],
                          state[prefix + "feed_forward.layer_norm.bias"], eps=1e-6)
    inner = F.gelu(_linear(state, prefix + "feed_forward.w_1", normed))
    return residual + _linear(state, prefix + "feed_forward.w_2", inner)


def _gate(state, encoder, x):
    return torch.sigmoid(torch.relu(_linear(state, f"{encoder}_gate.fc", x))) * x


def released_reference_logits(state, text, audio, video, speaker_ids, mask, heads):
    """Logits (B, N, C) of the released model in eval mode."""
    speakers = speaker_ids.clone()
    speakers[mask == 0] = RELEASED_PADDING_SPEAKER
    embedding = state["speaker_embeddings.weight"][speakers] + _positions(text.shape[1], text.shape[2])

    def path(encoder, gate, query, key_value):
        return _gate(state, gate, _block(state, encoder, query, key_value, embedding, mask, heads))

    audio_anchor = _linear(state, "features_reduce_a", torch.cat(
        [path("a_a", "a_a", audio, audio), path("t_a", "t_a", audio, text), path("v_a", "v_a", audio, video)], -1))
    video_anchor = _linear(state, "features_reduce_v", torch.cat(
        [path("v_v", "v_v", video, video), path("t_v", "t_v", video, text), path("a_v", "a_v", video, audio)], -1))
    text_anchor = _linear(state, "features_reduce_t", torch.cat(
        [path("t_t", "t_t", text, text), path("t_t", "t_t", text, audio_anchor),
         path("t_t", "t_t", text, video_anchor)], -1))
    return _linear(state, "w_t", text_anchor)
