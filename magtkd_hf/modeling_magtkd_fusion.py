"""The multi-modal anchor gated transformer: MAGTKD's fusion of per-utterance text, audio and video features."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_magtkd import MagtkdFusionConfig
from .fusion_layout import ConversationLayout, check_all, sinusoidal_positions  # noqa: F401 (importable from here)
from .losses import fusion_loss


@dataclass
class MagtkdFusionOutput(ModelOutput):
    r"""
    Output of [`MagtkdFusionModel`]. Values at padded positions (attention_mask 0) are zeros and carry no meaning.

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given): the fusion loss.
    logits (`torch.FloatTensor` of shape `(batch_size, num_utterances, num_labels)`): the prediction (text anchor's
        head).
    audio_logits, video_logits (`torch.FloatTensor` of shape `(batch_size, num_utterances, num_labels)`): the audio and
        video anchors' heads.
    text_anchor_hidden_states, audio_anchor_hidden_states, video_anchor_hidden_states (`torch.FloatTensor` of shape
        `(batch_size, num_utterances, hidden_size)`): F_t, F_a and F_v.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states`): the output of every
        fusion block, `(batch_size, num_utterances, hidden_size)` each, in the order of `FUSION_BLOCK_NAMES`; None for
        a block that an index selection of `output_hidden_states` leaves out.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions`): the attention weights of
        every fusion block, `(batch_size, num_heads, num_utterances, num_utterances)` each, in the same order.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    audio_logits: torch.FloatTensor | None = None
    video_logits: torch.FloatTensor | None = None
    text_anchor_hidden_states: torch.FloatTensor | None = None
    audio_anchor_hidden_states: torch.FloatTensor | None = None
    video_anchor_hidden_states: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor | None, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# The fusion's blocks in the order of `hidden_states` and `attentions`: each anchor's paths (itself, then the two
# sources it attends to; the text anchor attends to the audio and video anchors' outputs).
FUSION_BLOCK_NAMES = (
    "audio<-audio", "audio<-text", "audio<-video", "video<-video", "video<-text", "video<-audio",
    "text<-text", "text<-audio_anchor", "text<-video_anchor",
)


def selected_states(states: tuple, selection, prepare) -> tuple | None:
    """`prepare(state)` of the `states` that `output_hidden_states` selects, as transformers' models take it: all for
    `True`, None for `False`, else those of an index or a list of indices (negative ones from the end), None in place
    of the others."""
    count = len(states)
    if isinstance(selection, bool):
        chosen = set(range(count)) if selection else set()
    else:
        chosen = {index % count for index in ([selection] if isinstance(selection, int) else selection)
                  if -count <= index < count}
    return tuple(prepare(state) if index in chosen else None for index, state in enumerate(states)) if chosen else None


class MagtkdDropout(nn.Dropout):
    """
    Dropout with a faster mask on CPU, where `bernoulli_` (behind `F.dropout`) costs about 1.5 ms per (U, H)
    activation: random bits for p = 0.5, `rand_like` otherwise; the same distribution. `F.dropout` elsewhere. When
    inactive (evaluation, p = 0) it returns its input itself, so callers can tell that two paths share an input.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return hidden_states
        if hidden_states.device.type != "cpu":
            return super().forward(hidden_states)
        keep = self._fair_coin_mask(hidden_states) if self.p == 0.5 else torch.rand_like(hidden_states) >= self.p
        # One multiplication by the scaled mask (0 or 1 / (1 - p)), the same numbers as `x * keep * scale` (scaling
        # by 2 is exact), with one pass fewer forward and backward.
        return hidden_states * keep.to(hidden_states.dtype).mul_(1.0 / (1.0 - self.p))

    @staticmethod
    def _fair_coin_mask(hidden_states: torch.Tensor) -> torch.Tensor:
        # p = 0.5 (the paper's): one random bit per element, 16 from each random int32 (their low bits are uniform);
        # about 3x faster than comparing `rand_like`. 0/1 integers of `hidden_states`' shape.
        count = hidden_states.numel()
        words = torch.empty((count + 15) // 16, dtype=torch.int32).random_()
        shifts = torch.arange(16, dtype=torch.int32)
        bits = (words[:, None] >> shifts).bitwise_and_(1)
        return bits.flatten()[:count].view(hidden_states.shape)


class MagtkdFeedForward(nn.Module):
    """Pre-norm feed-forward with residual: `x + drop(W_2 drop(GELU(W_1 LN(x))))`."""

    def __init__(self, config: MagtkdFusionConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = MagtkdDropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        inner = self.dropout(F.gelu(self.intermediate(self.layer_norm(hidden_states))))
        return hidden_states + self.dropout(self.output(inner))


class MagtkdFusionBlock(nn.Module):
    """
    One transformer layer of the fusion: multi-head attention of `query_states` over `key_value_states` within each
    conversation, residual on the queries, then the feed-forward. Inputs are packed utterances (U, H) that already
    carry positions and speakers; self- or cross-attention is the caller's choice of inputs.
    """

    def __init__(self, config: MagtkdFusionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.dropout
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = MagtkdDropout(config.dropout)
        self.feed_forward = MagtkdFeedForward(config)

    def forward(
        self,
        query_states: torch.Tensor,
        key_value_states: torch.Tensor,
        layout: ConversationLayout,
        query_copies: int = 1,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            query_states (`torch.Tensor` of shape `(U / query_copies, H)`): the queries; with `query_copies` P > 1 the
                same queries serve the P copies of the batch stacked in `key_value_states`: projected once, P x fewer
                query FLOPs (the text anchor's paths in evaluation).
            key_value_states (`torch.Tensor` of shape `(U, H)`): the keys and values, packed as `layout` says.
            output_attentions (`bool`): also return the attention weights (computed explicitly: SDPA gives none).
        Returns:
            `torch.Tensor` of shape `(U, H)`, and the attention weights `(B, heads, N, N)` or None.
        """
        query = self.query(query_states)
        if query_copies > 1:
            query, query_states = query.repeat(query_copies, 1), query_states.repeat(query_copies, 1)
        batch_size, length = layout.batch_size, layout.max_length
        query, key, value = (
            layout.to_padded(projected).view(batch_size, length, self.num_heads, -1).transpose(1, 2)
            for projected in (query, self.key(key_value_states), self.value(key_value_states))
        )  # (B, heads, N, head_dim) each
        dropout = self.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
            weights = scores.masked_fill(~layout.key_mask, torch.finfo(scores.dtype).min).softmax(dim=-1)
            context = F.dropout(weights, dropout, self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=layout.key_mask, dropout_p=dropout)
        # (B, heads, N, head_dim) -> (U, H)
        context = layout.to_packed(context.transpose(1, 2).reshape(batch_size, length, -1))
        attended = self.dropout(self.attention_output(context)) + query_states
        return self.feed_forward(attended), weights


class MagtkdGate(nn.Module):
    """g(x) = sigmoid(ReLU(W x + b)) * x."""

    def __init__(self, config: MagtkdFusionConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.relu(self.dense(hidden_states))) * hidden_states


class MagtkdAnchor(nn.Module):
    """
    One anchor: F_m = R_m[ g(X(M, M)) ; g(X(O_1 -> M)) ; g(X(O_2 -> M)) ], the anchor modality M attending to itself
    and to two other sources. With `shared=True` the three paths use one block and one gate (the released text anchor).
    """

    def __init__(self, config: MagtkdFusionConfig, shared: bool = False):
        super().__init__()
        num_blocks = 1 if shared else 3
        self.blocks = nn.ModuleList([MagtkdFusionBlock(config) for _ in range(num_blocks)])
        self.gates = nn.ModuleList([MagtkdGate(config) for _ in range(num_blocks)])
        self.input_dropout = MagtkdDropout(config.dropout)
        self.reduce = nn.Linear(3 * config.hidden_size, config.hidden_size)

    def forward(
        self,
        anchor_states: torch.Tensor,
        other_states: tuple[torch.Tensor, torch.Tensor],
        layout: ConversationLayout,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]]:
        """
        Args:
            anchor_states (`torch.Tensor` of shape `(U, H)`): the anchor modality plus positions and speakers.
            other_states (two `torch.Tensor` of shape `(U, H)`): the sources it attends to, likewise embedded.
        Returns:
            F_m (`torch.Tensor` of shape `(U, H)`), the three paths' block outputs (U, H) and their attention weights
            (B, heads, N, N; None without `output_attentions`).
        """
        # Self path: no input dropout; cross paths: dropout on queries and keys/values, drawn per path.
        queries = [anchor_states] + [self.input_dropout(anchor_states) for _ in other_states]
        keys_values = [anchor_states] + [self.input_dropout(states) for states in other_states]
        if len(self.blocks) == 1:
            hidden, weights = self._shared_paths(queries, keys_values, layout, output_attentions)
            # `unbind` of a (paths, U, H) view, not `chunk`: U is data-dependent, which torch.export cannot chunk.
            paths = hidden.view(len(queries), -1, hidden.shape[-1]).unbind(0)
            gated = self.gates[0](hidden).view(len(queries), -1, hidden.shape[-1]).unbind(0)
        else:
            paths, weights = zip(*(
                block(query, key_value, layout, output_attentions=output_attentions)
                for block, query, key_value in zip(self.blocks, queries, keys_values)
            ))
            gated = [gate(path) for gate, path in zip(self.gates, paths)]
        return self.reduce(torch.cat(gated, dim=-1)), tuple(paths), tuple(weights)

    def _shared_paths(self, queries, keys_values, layout, output_attentions):
        # One call over the three paths stacked as a 3x batch: larger matrix products, same result. Queries that are
        # one tensor (no input dropout: evaluation) are projected once.
        num_paths = len(queries)
        if all(query is queries[0] for query in queries):
            stacked_queries, query_copies = queries[0], num_paths
        else:
            stacked_queries, query_copies = torch.cat(queries), 1
        hidden, weights = self.blocks[0](
            stacked_queries, torch.cat(keys_values), layout.repeated(num_paths), query_copies, output_attentions
        )
        weights = (None,) * num_paths if weights is None else weights.view(num_paths, -1, *weights.shape[1:]).unbind(0)
        return hidden, weights


class MagtkdPreTrainedModel(PreTrainedModel):
    config_class = MagtkdFusionConfig
    base_model_prefix = "magtkd"
    main_input_name = "text_features"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MagtkdAnchor"]

    def _init_weights(self, module):
        """The released initialisation: PyTorch's default for linear layers, Xavier-uniform Q/K/V with zero bias."""
        if isinstance(module, MagtkdFusionBlock):
            for projection in (module.query, module.key, module.value):
                init.xavier_uniform_(projection.weight)
                init.zeros_(projection.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=getattr(self.config, "speaker_init_std", 0.1))
        if isinstance(module, MagtkdFusionModel):
            # Zeros, not a random draw: every other seeded weight (and each draw after) stays what it was before.
            init.zeros_(module.missing_audio_embedding)
            init.zeros_(module.missing_video_embedding)


class MagtkdFusionModel(MagtkdPreTrainedModel):
    r"""
    The multi-modal anchor gated transformer (MAGTKD stage 4): per-utterance text, audio and video features of a batch
    of conversations -> an emotion per utterance. Audio and video anchors attend to their own modality and to the two
    others; the text anchor attends to text and to the two anchors; heads on each anchor give the logits.

    Real utterances never see padded ones, and position-wise layers run on real utterances only. An utterance without
    audio or video (`audio_mask`/`video_mask` 0, or dropped by `config.modality_dropout` in training) takes the learned
    `missing_audio_embedding`/`missing_video_embedding` in place of that feature.
    """

    # Folders saved before the missing-modality embeddings existed load without them (zeros, see `_init_weights`).
    _keys_to_ignore_on_load_missing = [r"missing_(audio|video)_embedding$"]

    def __init__(self, config: MagtkdFusionConfig):
        super().__init__(config)
        self.speaker_embeddings = nn.Embedding(
            config.speaker_table_size, config.hidden_size, padding_idx=config.speaker_padding_index
        )
        self.audio_anchor = MagtkdAnchor(config)
        self.video_anchor = MagtkdAnchor(config)
        self.text_anchor = MagtkdAnchor(config, shared=config.share_text_anchor_block)
        self.text_head = nn.Linear(config.hidden_size, config.num_labels)
        self.audio_head = nn.Linear(config.hidden_size, config.num_labels)
        self.video_head = nn.Linear(config.hidden_size, config.num_labels)
        # Registered last, so that the earlier parameters keep their order (optimiser groups, gradient-norm sums).
        self.missing_audio_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.missing_video_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.post_init()

    def forward(
        self,
        text_features: torch.Tensor,
        audio_features: torch.Tensor,
        video_features: torch.Tensor,
        speaker_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        audio_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
    ) -> MagtkdFusionOutput | tuple:
        r"""
        Args:
            text_features, audio_features, video_features (`torch.FloatTensor` of shape
                `(batch_size, num_utterances, hidden_size)`): per-utterance features; cast to the model's dtype.
            speaker_ids (`torch.LongTensor` of shape `(batch_size, num_utterances)`): speaker index of every utterance
                in `[0, config.num_speakers)`; ignored at padding.
            attention_mask (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): 1 for real
                utterances, 0 for padding; all ones when omitted.
            labels (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): class indices; -100: ignore
            audio_mask, video_mask (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): 1 where
                the utterance has that modality, 0 where it is absent (its feature is then ignored and the missing
                embedding used); all present when omitted.
            output_hidden_states (`bool`, `int` or `list[int]`), output_attentions (`bool`), *optional*: return the
                fusion blocks' outputs (all, or those of the given indices) and attention weights; the config's default.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        attention_mask = torch.ones_like(speaker_ids) if attention_mask is None else attention_mask
        masks = {"attention_mask": attention_mask, "audio_mask": audio_mask, "video_mask": video_mask}
        self._check_inputs(text_features, audio_features, video_features, speaker_ids, masks)
        layout = ConversationLayout(attention_mask, causal=self.config.causal)
        position_and_speaker = self._position_and_speaker(layout.to_packed(speaker_ids[..., None]).squeeze(1), layout)
        text, audio, video = self._embedded_inputs(
            (text_features, audio_features, video_features), (audio_mask, video_mask), position_and_speaker, layout
        )
        (text_anchor, audio_anchor, video_anchor), (paths, weights) = self._anchors(
            text, audio, video, position_and_speaker, layout, output_attentions
        )
        logits = self.text_head(text_anchor)
        audio_logits = self.audio_head(audio_anchor)
        video_logits = self.video_head(video_anchor)
        loss = None if labels is None else self._loss(
            layout.to_packed(labels[..., None].to(speaker_ids.device)).squeeze(1), logits, audio_logits, video_logits,
            text_anchor, audio_anchor, video_anchor,
        )
        output = MagtkdFusionOutput(
            loss=loss, logits=layout.to_padded(logits), audio_logits=layout.to_padded(audio_logits),
            video_logits=layout.to_padded(video_logits), text_anchor_hidden_states=layout.to_padded(text_anchor),
            audio_anchor_hidden_states=layout.to_padded(audio_anchor),
            video_anchor_hidden_states=layout.to_padded(video_anchor),
            hidden_states=selected_states(paths, output_hidden_states, layout.to_padded),
            attentions=weights if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _anchors(self, text, audio, video, position_and_speaker, layout: ConversationLayout, output_attentions: bool):
        """The anchors' outputs F_t, F_a, F_v (U, H), and their blocks' outputs and attention weights in the order of
        `FUSION_BLOCK_NAMES`."""
        audio_anchor, audio_paths, audio_weights = self.audio_anchor(audio, (text, video), layout, output_attentions)
        video_anchor, video_paths, video_weights = self.video_anchor(video, (text, audio), layout, output_attentions)
        text_anchor, text_paths, text_weights = self.text_anchor(
            text, (audio_anchor + position_and_speaker, video_anchor + position_and_speaker), layout, output_attentions
        )
        if self.config.anchor_residual:
            text_anchor = text_anchor + audio_anchor + video_anchor
        blocks = (audio_paths + video_paths + text_paths, audio_weights + video_weights + text_weights)
        return (text_anchor, audio_anchor, video_anchor), blocks

    def _embedded_inputs(self, features, masks, position_and_speaker, layout: ConversationLayout):
        """(B, N, H) text, audio and video features -> packed (U, H) each, absent audio/video replaced by the missing
        embeddings, position and speaker added."""
        dtype = self.text_head.weight.dtype
        text, audio, video = (layout.to_packed(feature.to(dtype)) for feature in features)
        audio = self._with_missing(audio, masks[0], self.missing_audio_embedding, layout)
        video = self._with_missing(video, masks[1], self.missing_video_embedding, layout)
        return tuple(packed + position_and_speaker for packed in (text, audio, video))

    def _with_missing(self, packed, mask, embedding, layout: ConversationLayout) -> torch.Tensor:
        """(U, H) features, the missing embedding where `mask` (B, N) is 0 or modality dropout drops them. Without
        either they are returned as they are, no random number drawn: the model computes what it did before masks."""
        present = None if mask is None else layout.to_packed(mask[..., None].to(packed.device)).squeeze(1).bool()
        rate = self.config.modality_dropout
        if self.training and rate > 0.0:
            # torch's RNG, as dropout: seeded runs drop the same utterances
            kept = torch.rand(packed.shape[0], device=packed.device) >= rate
            present = kept if present is None else present & kept
        if present is None:
            # In training the embedding still joins the graph (with a zero gradient): DDP with
            # find_unused_parameters=False needs every parameter in every step's graph. Adding 0.0 changes nothing.
            return packed + 0.0 * embedding.to(packed.dtype) if self.training else packed
        return torch.where(present[:, None], packed, embedding.to(packed.dtype))

    def _position_and_speaker(self, speaker_ids: torch.Tensor, layout: ConversationLayout) -> torch.Tensor:
        """Sinusoidal position of each utterance in its conversation plus its speaker's embedding: (U,) -> (U, H)."""
        speakers = self.speaker_embeddings(speaker_ids)
        return sinusoidal_positions(layout.positions, self.config.hidden_size, speakers.dtype) + speakers

    def _loss(self, labels, logits, audio_logits, video_logits, text_anchor, audio_anchor, video_anchor):
        config = self.config
        return fusion_loss(
            logits, audio_logits, video_logits, text_anchor, audio_anchor, video_anchor, labels,
            audio_weight=config.audio_anchor_loss_weight,
            video_weight=config.video_anchor_loss_weight,
            feature_loss=config.anchor_feature_loss,
            logit_temperature=config.logit_loss_temperature,
            inter_weight=config.logit_loss_inter_weight,
            intra_weight=config.logit_loss_intra_weight,
            feature_temperature=config.feature_loss_temperature,
            class_weights=config.class_weights,
        )

    def _check_inputs(self, text_features, audio_features, video_features, speaker_ids, masks):
        expected = (*speaker_ids.shape, self.config.hidden_size)
        for name, features in (("text", text_features), ("audio", audio_features), ("video", video_features)):
            if tuple(features.shape) != expected:
                raise ValueError(f"`{name}_features` has shape {tuple(features.shape)}, expected {expected}.")
        for name, mask in masks.items():
            if mask is not None and mask.shape != speaker_ids.shape:
                raise ValueError(f"`{name}` shape {tuple(mask.shape)} differs from `speaker_ids` {tuple(speaker_ids.shape)}.")
        attention_mask = masks["attention_mask"]
        if speaker_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Conversations of {speaker_ids.shape[1]} utterances exceed max_position_embeddings="
                f"{self.config.max_position_embeddings}."
            )
        real = attention_mask.bool()
        check_all(
            real.any(dim=1),
            lambda: f"Conversations {(~real.any(dim=1)).nonzero().flatten().tolist()} of the batch have no utterance "
            "(attention_mask all 0).",
        )
        num_speakers = self.config.num_speakers
        check_all(
            ~real | ((speaker_ids >= 0) & (speaker_ids < num_speakers)),
            lambda: f"speaker_ids must lie in [0, {num_speakers}) at real utterances, got "
            f"{sorted(set(speaker_ids[real].tolist()))}.",
        )


__all__ = [
    "FUSION_BLOCK_NAMES",
    "ConversationLayout",
    "MagtkdFusionModel",
    "MagtkdFusionOutput",
    "MagtkdPreTrainedModel",
    "check_all",
]
