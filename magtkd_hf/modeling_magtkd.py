"""MAGTKD models: the multi-modal anchor gated transformer (fusion, spec section 6)."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_magtkd import MagtkdFusionConfig
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
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    audio_logits: torch.FloatTensor | None = None
    video_logits: torch.FloatTensor | None = None
    text_anchor_hidden_states: torch.FloatTensor | None = None
    audio_anchor_hidden_states: torch.FloatTensor | None = None
    video_anchor_hidden_states: torch.FloatTensor | None = None


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

    def __init__(self, attention_mask: torch.Tensor):
        self.batch_size, self.max_length = attention_mask.shape
        mask = attention_mask.bool()
        self.flat_index = mask.flatten().nonzero().squeeze(1)  # (U,)
        self.positions = self.flat_index % self.max_length  # (U,)
        self.key_mask = mask[:, None, None, :]  # (B, 1, 1, N), True = a real utterance to attend to

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


class MagtkdDropout(nn.Dropout):
    """
    Dropout with a faster mask on CPU, where `bernoulli_` (behind `F.dropout`) costs about 1.5 ms per (U, H)
    activation: random bits for p = 0.5, `rand_like` otherwise; the same distribution. `F.dropout` elsewhere.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or hidden_states.device.type != "cpu":
            return super().forward(hidden_states)
        keep = self._fair_coin_mask(hidden_states) if self.p == 0.5 else torch.rand_like(hidden_states) >= self.p
        return hidden_states * keep * (1.0 / (1.0 - self.p))

    @staticmethod
    def _fair_coin_mask(hidden_states: torch.Tensor) -> torch.Tensor:
        # p = 0.5 (the paper's): one random bit per element, 16 from each random int32 (their low bits are uniform);
        # about 3x faster than comparing `rand_like`.
        count = hidden_states.numel()
        words = torch.empty((count + 15) // 16, dtype=torch.int32).random_()
        shifts = torch.arange(16, dtype=torch.int32)
        bits = (words[:, None] >> shifts) & 1
        return bits.flatten()[:count].view(hidden_states.shape).bool()


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
        self, query_states: torch.Tensor, key_value_states: torch.Tensor, layout: ConversationLayout
    ) -> torch.Tensor:
        """(U, H), (U, H) -> (U, H)."""
        projected = torch.cat(
            (self.query(query_states), self.key(key_value_states), self.value(key_value_states)), dim=-1
        )
        batch_size, length = layout.batch_size, layout.max_length
        query, key, value = (
            layout.to_padded(projected).view(batch_size, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        )
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=layout.key_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )  # (B, heads, N, head_dim)
        context = layout.to_packed(context.transpose(1, 2).reshape(batch_size, length, -1))
        attended = self.dropout(self.attention_output(context)) + query_states
        return self.feed_forward(attended)


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
        self, anchor_states: torch.Tensor, other_states: tuple[torch.Tensor, torch.Tensor], layout: ConversationLayout
    ) -> torch.Tensor:
        """
        Args:
            anchor_states (`torch.Tensor` of shape `(U, H)`): the anchor modality plus positions and speakers.
            other_states (two `torch.Tensor` of shape `(U, H)`): the sources it attends to, likewise embedded.
        Returns:
            `torch.Tensor` of shape `(U, H)`.
        """
        # Self path: no input dropout; cross paths: dropout on queries and keys/values, drawn per path.
        queries = [anchor_states] + [self.input_dropout(anchor_states) for _ in other_states]
        keys_values = [anchor_states] + [self.input_dropout(states) for states in other_states]
        if len(self.blocks) == 1:
            gated = self._shared_paths(queries, keys_values, layout)
        else:
            gated = [
                gate(block(query, key_value, layout))
                for block, gate, query, key_value in zip(self.blocks, self.gates, queries, keys_values)
            ]
        return self.reduce(torch.cat(gated, dim=-1))

    def _shared_paths(self, queries, keys_values, layout):
        # One call over the three paths stacked as a 3x batch: larger matrix products, same result.
        num_paths = len(queries)
        hidden = self.blocks[0](torch.cat(queries), torch.cat(keys_values), layout.repeated(num_paths))
        return self.gates[0](hidden).chunk(num_paths)


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
            init.normal_(module.weight, mean=0.0, std=self.config.speaker_init_std)


class MagtkdFusionModel(MagtkdPreTrainedModel):
    r"""
    The multi-modal anchor gated transformer (MAGTKD stage 4): per-utterance text, audio and video features of a batch
    of conversations -> an emotion per utterance. Audio and video anchors attend to their own modality and to the two
    others; the text anchor attends to text and to the two anchors; heads on each anchor give the logits.

    Real utterances never see padded ones, and position-wise layers run on real utterances only.
    """

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
        **kwargs,
    ) -> MagtkdFusionOutput | tuple:
        r"""
        Args:
            text_features, audio_features, video_features (`torch.FloatTensor` of shape
                `(batch_size, num_utterances, hidden_size)`): per-utterance features (h_t, h_a, h_v).
            speaker_ids (`torch.LongTensor` of shape `(batch_size, num_utterances)`): speaker index of every utterance
                in `[0, config.num_speakers)`; ignored at padding.
            attention_mask (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): 1 for real
                utterances, 0 for padding; all ones when omitted.
            labels (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): class indices, -100 to
                ignore an utterance.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = torch.ones(speaker_ids.shape, dtype=torch.long, device=speaker_ids.device)
        self._check_inputs(text_features, audio_features, video_features, speaker_ids, attention_mask)
        layout = ConversationLayout(attention_mask)

        to_packed = layout.to_packed
        position_and_speaker = self._position_and_speaker(to_packed(speaker_ids[..., None]).squeeze(1), layout)
        text = to_packed(text_features) + position_and_speaker
        audio = to_packed(audio_features) + position_and_speaker
        video = to_packed(video_features) + position_and_speaker

        audio_anchor = self.audio_anchor(audio, (text, video), layout)
        video_anchor = self.video_anchor(video, (text, audio), layout)
        text_anchor = self.text_anchor(
            text, (audio_anchor + position_and_speaker, video_anchor + position_and_speaker), layout
        )
        logits = self.text_head(text_anchor)
        audio_logits = self.audio_head(audio_anchor)
        video_logits = self.video_head(video_anchor)

        loss = None
        if labels is not None:
            loss = self._loss(
                layout.to_packed(labels[..., None]).squeeze(1),
                logits,
                audio_logits,
                video_logits,
                text_anchor,
                audio_anchor,
                video_anchor,
            )
        output = MagtkdFusionOutput(
            loss=loss,
            logits=layout.to_padded(logits),
            audio_logits=layout.to_padded(audio_logits),
            video_logits=layout.to_padded(video_logits),
            text_anchor_hidden_states=layout.to_padded(text_anchor),
            audio_anchor_hidden_states=layout.to_padded(audio_anchor),
            video_anchor_hidden_states=layout.to_padded(video_anchor),
        )
        return output if return_dict else output.to_tuple()

    def _position_and_speaker(self, speaker_ids: torch.Tensor, layout: ConversationLayout) -> torch.Tensor:
        """P + E_spk for the packed utterances: (U,) -> (U, H)."""
        speakers = self.speaker_embeddings(speaker_ids)
        return sinusoidal_positions(layout.positions, self.config.hidden_size, speakers.dtype) + speakers

    def _loss(self, labels, logits, audio_logits, video_logits, text_anchor, audio_anchor, video_anchor):
        labelled = labels != -100
        if not labelled.any():
            return logits.sum() * 0.0
        config = self.config
        return fusion_loss(
            logits[labelled],
            audio_logits[labelled],
            video_logits[labelled],
            text_anchor[labelled],
            audio_anchor[labelled],
            video_anchor[labelled],
            labels[labelled],
            audio_weight=config.audio_anchor_loss_weight,
            video_weight=config.video_anchor_loss_weight,
            feature_loss=config.anchor_feature_loss,
            logit_temperature=config.logit_loss_temperature,
            inter_weight=config.logit_loss_inter_weight,
            intra_weight=config.logit_loss_intra_weight,
            feature_temperature=config.feature_loss_temperature,
        )

    def _check_inputs(self, text_features, audio_features, video_features, speaker_ids, attention_mask):
        expected = (*speaker_ids.shape, self.config.hidden_size)
        for name, features in (("text", text_features), ("audio", audio_features), ("video", video_features)):
            if tuple(features.shape) != expected:
                raise ValueError(f"`{name}_features` has shape {tuple(features.shape)}, expected {expected}.")
        if attention_mask.shape != speaker_ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} differs from `speaker_ids` "
                f"{tuple(speaker_ids.shape)}."
            )
        if speaker_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Conversations of {speaker_ids.shape[1]} utterances exceed max_position_embeddings="
                f"{self.config.max_position_embeddings}."
            )
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"Conversations {empty} of the batch have no utterance (attention_mask all 0).")
        real_speakers = speaker_ids[attention_mask.bool()]
        if real_speakers.numel() and (real_speakers.min() < 0 or real_speakers.max() >= self.config.num_speakers):
            raise ValueError(
                f"speaker_ids must lie in [0, {self.config.num_speakers}) at real utterances, got values from "
                f"{int(real_speakers.min())} to {int(real_speakers.max())}."
            )


# --- Stage-1 encoders and the end-to-end model (spec sections 3 and 6) -----------------------------------------------
# Imported here, next to their only users, so that this section stays separate from the fusion code above.
import copy  # noqa: E402

from transformers import AutoModel  # noqa: E402

from .configuration_magtkd import MagtkdConfig  # noqa: E402

MODALITIES = ("text", "audio", "video")


@dataclass
class MagtkdUnimodalOutput(ModelOutput):
    r"""
    Output of [`MagtkdTextModel`], [`MagtkdAudioModel`] and [`MagtkdVideoModel`] (U utterances).

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given): cross-entropy.
    logits (`torch.FloatTensor` of shape `(num_utterances, num_labels)`): z_t, z_a or z_v.
    features (`torch.FloatTensor` of shape `(num_utterances, hidden_size)`): h_t = W_t(x_mask), h_a (first frame) or
        h_v (CLS), the feature the fusion takes.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None


@dataclass
class MagtkdEmotionRecognitionOutput(ModelOutput):
    r"""
    Output of [`MagtkdForEmotionRecognition`]. B conversations, N = longest, U = utterances of the batch.

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given): the fusion loss.
    logits (`torch.FloatTensor` of shape `(batch_size, num_utterances, num_labels)`): the prediction; zeros at padding.
    audio_logits, video_logits (`torch.FloatTensor` of shape `(batch_size, num_utterances, num_labels)`): the fusion's
        audio and video anchor heads.
    text_features, audio_features, video_features (`torch.FloatTensor` of shape `(total_utterances, hidden_size)`): the
        per-utterance encoder features that entered the fusion, in the processor's utterance order.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    audio_logits: torch.FloatTensor | None = None
    video_logits: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    audio_features: torch.FloatTensor | None = None
    video_features: torch.FloatTensor | None = None


def regroup_utterances(
    features: torch.Tensor,
    utterance_mask: torch.Tensor,
    conversation_index: torch.Tensor | None = None,
    utterance_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Per-utterance features (U, H) -> per-conversation features (B, N, H), zeros at padding. The U utterances are in the
    processor's order (conversation by conversation, i.e. `utterance_mask.bool()` in row-major order); when given,
    `conversation_index`/`utterance_index` (U,) must agree with it.
    """
    layout = ConversationLayout(utterance_mask)
    flat_index = layout.flat_index
    if flat_index.numel() != features.shape[0]:
        raise ValueError(
            f"{features.shape[0]} utterance features for {flat_index.numel()} real utterances in `utterance_mask`."
        )
    if conversation_index is not None and utterance_index is not None:
        given = conversation_index.to(flat_index.device) * layout.max_length + utterance_index.to(flat_index.device)
        if given.shape != flat_index.shape or not torch.equal(given, flat_index):
            raise ValueError(
                "`conversation_index`/`utterance_index` disagree with `utterance_mask`: utterances must come "
                "conversation by conversation, in order (as the processor gives them)."
            )
    return layout.to_padded(features)


def _utterance_labels(labels: torch.Tensor | None, utterance_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Unimodal labels are per utterance (U,); the processor's (B, N) labels are accepted with its `utterance_mask`."""
    if labels is None or labels.dim() == 1:
        return labels
    if utterance_mask is None:
        raise ValueError("`labels` of shape (batch, utterances) need the processor's `utterance_mask`.")
    return labels[utterance_mask.bool()]


def _classification_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    if labels is None:
        return None
    labels = labels.to(logits.device)
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected ({logits.shape[0]},).")
    if not (labels != -100).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


def _encoder_from_config(encoder_config, **kwargs) -> PreTrainedModel:
    """`AutoModel.from_config`, without a pooler where the encoder has one (MAGTKD never uses it, and unused
    parameters trouble distributed training)."""
    try:
        return AutoModel.from_config(encoder_config, add_pooling_layer=False, **kwargs)
    except TypeError:
        return AutoModel.from_config(encoder_config, **kwargs)


def _encoder_from_pretrained(name_or_path, **kwargs) -> PreTrainedModel:
    try:
        return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False, **kwargs)
    except TypeError:
        return AutoModel.from_pretrained(name_or_path, **kwargs)


class MagtkdEncoderPreTrainedModel(MagtkdPreTrainedModel):
    """Base of the models built on a Hub encoder: config [`MagtkdConfig`], the encoder's own initialisation, heads
    initialised as PyTorch's `nn.Linear` (as the released scripts)."""

    config_class = MagtkdConfig
    supports_gradient_checkpointing = True
    # Attention is resolved by each encoder on its own sub-config (sdpa by default; `attn_implementation=` of
    # `from_pretrained` reaches them). The composite level and the fusion (which calls `scaled_dot_product_attention`
    # itself) have nothing to dispatch: see `_check_and_adjust_attn_implementation`.

    def _check_and_adjust_attn_implementation(self, attn_implementation, is_init_check=False, **kwargs):
        return "eager"
    # The loss is a mean over the batch's utterances: `Trainer` scales it for gradient accumulation itself.
    accepts_loss_kwargs = False
    _no_split_modules = []

    def enable_input_require_grads(self):
        """As `PreTrainedModel.enable_input_require_grads`, for every encoder's input embeddings, whose outputs may be
        tuples (TimeSformer's patch embeddings return one)."""

        def make_outputs_require_grads(module, inputs, output):
            for tensor in output if isinstance(output, tuple) else (output,):
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    tensor.requires_grad_(True)

        hooks, seen = [], set()
        for module in self.modules():
            if not isinstance(module, PreTrainedModel) or module is self or isinstance(module, MagtkdPreTrainedModel):
                continue
            try:
                embeddings = module.get_input_embeddings()
            except (NotImplementedError, AttributeError):
                continue
            if embeddings is None or id(embeddings) in seen:
                continue
            seen.add(id(embeddings))
            hooks.append(embeddings.register_forward_hook(make_outputs_require_grads))
        self._require_grads_hooks = hooks
        if hooks:
            self._require_grads_hook = hooks[0]


class MagtkdUnimodalModel(MagtkdEncoderPreTrainedModel):
    """Common part of the three stage-1 models: one encoder (from `config.<modality>_config`) and a head."""

    modality: str = ""

    def __init__(self, config: MagtkdConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        config_name = f"{self.modality}_config"
        self.encoder = encoder if encoder is not None else _encoder_from_config(getattr(config, config_name))
        # One config object for the encoder and the composite config: what is saved is what runs.
        setattr(config, config_name, self.encoder.config)
        self._build_head(config, self.encoder.config.hidden_size)
        self.post_init()

    def _build_head(self, config: MagtkdConfig, encoder_hidden: int):
        self.classifier = nn.Linear(encoder_hidden, config.num_labels)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    @classmethod
    def from_encoder(cls, config: MagtkdConfig, encoder_name_or_path: str, **kwargs):
        """
        A stage-1 model whose encoder starts from a pretrained checkpoint (a Hub name or a folder, passed to
        `AutoModel.from_pretrained` with `kwargs`); the head is freshly initialised. `config.<modality>_config` is
        replaced by the checkpoint's config (the text encoder's embeddings are resized to
        `config.text_config.vocab_size` when that differs, e.g. to add the 9 speaker tokens).
        """
        encoder = _encoder_from_pretrained(encoder_name_or_path, **kwargs)
        encoder = cls._adapt_pretrained_encoder(config, encoder)
        setattr(config, f"{cls.modality}_config", encoder.config)
        config._check_values()
        return cls(config, encoder=encoder)

    @classmethod
    def _adapt_pretrained_encoder(cls, config: MagtkdConfig, encoder: PreTrainedModel) -> PreTrainedModel:
        return encoder

    def _head_output(self, features, labels, utterance_mask, return_dict):
        """Logits from the features (U, H), the cross-entropy loss with labels, packed as the model's output."""
        logits = self.classifier(features)
        loss = _classification_loss(logits, _utterance_labels(labels, utterance_mask))
        output = MagtkdUnimodalOutput(loss=loss, logits=logits, features=features)
        return output if return_dict else output.to_tuple()

    def _encoder_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype


class MagtkdTextModel(MagtkdUnimodalModel):
    r"""
    MAGTKD's text model (spec section 3): a RoBERTa-family encoder reads the prompt, whose last token is the mask token
    (the processor pads on the left); its last hidden state there, mapped by `projection` (W_t) to the fusion width,
    is the utterance's feature h_t, and `classifier` gives z_t.
    """

    modality = "text"
    main_input_name = "input_ids"

    def _build_head(self, config: MagtkdConfig, encoder_hidden: int):
        self.projection = nn.Linear(encoder_hidden, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    @classmethod
    def _adapt_pretrained_encoder(cls, config, encoder):
        target = config.text_config.vocab_size
        if target is not None and encoder.get_input_embeddings().num_embeddings != target:
            encoder.resize_token_embeddings(target)
        return encoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        utterance_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MagtkdUnimodalOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask (`torch.LongTensor` of shape `(num_utterances, sequence_length)`): the
                processor's prompt tokens, left padded, the mask token last.
            labels (`torch.LongTensor` of shape `(num_utterances,)`, *optional*): class indices, -100 to ignore; the
                processor's `(batch, utterances)` labels work too, with its `utterance_mask`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "The text inputs must be padded on the LEFT (the mask token last): the feature is read at the last "
                "position. MagtkdProcessor does this."
            )
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, -1]
        features = self.projection(hidden)
        return self._head_output(features, labels, utterance_mask, return_dict)


class MagtkdAudioModel(MagtkdUnimodalModel):
    r"""
    MAGTKD's audio model (spec section 3): a data2vec-audio encoder; the last hidden state at the first frame is the
    feature h_a (its width must be the fusion width) and `classifier` (the released W_a) gives z_a.
    """

    modality = "audio"
    main_input_name = "input_values"

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        utterance_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MagtkdUnimodalOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(num_utterances, num_samples)`): the processor's waveforms.
            attention_mask (`torch.LongTensor` of shape `(num_utterances, num_samples)`, *optional*): 1 = real
                sample, i.e. the processor's `audio_attention_mask` (which may be passed under that name instead, and
                then wins: with the whole processor output, `attention_mask` is the text's).
            labels: as for [`MagtkdTextModel`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if audio_attention_mask is not None:
            attention_mask = audio_attention_mask
        if attention_mask is not None and attention_mask.shape != input_values.shape:
            raise ValueError(
                f"The audio attention mask has shape {tuple(attention_mask.shape)} but `input_values` "
                f"{tuple(input_values.shape)}: pass the processor's `audio_attention_mask`."
            )
        hidden = self.encoder(
            input_values.to(self._encoder_dtype()),
            attention_mask=None if attention_mask is None else attention_mask.long(),
        ).last_hidden_state
        features = hidden[:, 0]
        return self._head_output(features, labels, utterance_mask, return_dict)


class MagtkdVideoModel(MagtkdUnimodalModel):
    r"""
    MAGTKD's video model (spec section 3): a TimeSformer encoder over the utterance's frames; the last hidden state at
    the first (CLS) position is the feature h_v (its width must be the fusion width) and `classifier` gives z_v.
    """

    modality = "video"
    main_input_name = "pixel_values"

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        utterance_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MagtkdUnimodalOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_utterances, num_frames, 3, height, width)`): the
                processor's frames.
            labels: as for [`MagtkdTextModel`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        features = self.encoder(pixel_values.to(self._encoder_dtype())).last_hidden_state[:, 0]
        return self._head_output(features, labels, utterance_mask, return_dict)


class MagtkdForEmotionRecognition(MagtkdEncoderPreTrainedModel):
    r"""
    MAGTKD end to end: the processor's output -> text, audio and video models (one feature per utterance each) ->
    regrouped per conversation -> the anchor gated fusion -> an emotion per utterance.

    It holds ONE audio and ONE video model: those whose features feed the fusion, as `config.audio_feature_source` /
    `config.video_feature_source` say (released MELD: the distilled audio and video students; released IEMOCAP: the
    distilled audio student and the stage-1 video model). Converters and recipes fill them accordingly.

    A modality's encoder can be skipped by passing its per-utterance features instead (`text_features`,
    `audio_features`, `video_features`, shape (U, H)), e.g. cached stage-3 features; otherwise its processor inputs
    are required. [`~MagtkdForEmotionRecognition.freeze_encoders`] freezes encoders (no gradients, eval mode).
    """

    main_input_name = "input_ids"

    def __init__(self, config: MagtkdConfig):
        super().__init__(config)
        self.text_model = MagtkdTextModel(config)
        self.audio_model = MagtkdAudioModel(config)
        self.video_model = MagtkdVideoModel(config)
        self.fusion = MagtkdFusionModel(config)
        self._frozen_modalities: set[str] = set()
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    def unimodal_model(self, modality: str) -> MagtkdUnimodalModel:
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; expected one of {MODALITIES}.")
        return getattr(self, f"{modality}_model")

    @classmethod
    def from_unimodal_models(
        cls,
        text_model: MagtkdTextModel,
        audio_model: MagtkdAudioModel,
        video_model: MagtkdVideoModel,
        fusion_model: MagtkdFusionModel | None = None,
        config: MagtkdConfig | None = None,
    ) -> "MagtkdForEmotionRecognition":
        """
        The end-to-end model holding trained stage-1/2 models (the audio and video ones chosen by the feature sources)
        and, when given, a trained fusion model. `config` defaults to the text model's config with the audio and video
        models' encoder configs.
        """
        encoder_configs = {
            "text_config": copy.deepcopy(text_model.config.text_config),
            "audio_config": copy.deepcopy(audio_model.config.audio_config),
            "video_config": copy.deepcopy(video_model.config.video_config),
        }
        if config is None:
            source = (fusion_model if fusion_model is not None else text_model).config
            fusion_fields = set(MagtkdFusionConfig.__dataclass_fields__)
            values = {name: value for name, value in source.to_dict().items() if name in fusion_fields}
            config = MagtkdConfig(**values, **encoder_configs)
        else:
            for name, encoder_config in encoder_configs.items():
                setattr(config, name, encoder_config)
            config._check_values()
        model = cls(config)
        model.text_model.load_state_dict(text_model.state_dict())
        model.audio_model.load_state_dict(audio_model.state_dict())
        model.video_model.load_state_dict(video_model.state_dict())
        if fusion_model is not None:
            model.fusion.load_state_dict(fusion_model.state_dict())
        return model

    @classmethod
    def from_encoders(
        cls, config: MagtkdConfig, text_encoder: str, audio_encoder: str, video_encoder: str, **kwargs
    ) -> "MagtkdForEmotionRecognition":
        """A model whose three encoders start from pretrained checkpoints (names or folders); heads and fusion are
        freshly initialised."""
        text = MagtkdTextModel.from_encoder(config, text_encoder, **kwargs)
        audio = MagtkdAudioModel.from_encoder(config, audio_encoder, **kwargs)
        video = MagtkdVideoModel.from_encoder(config, video_encoder, **kwargs)
        model = cls(config)
        for modality, trained in (("text", text), ("audio", audio), ("video", video)):
            model.unimodal_model(modality).encoder.load_state_dict(trained.encoder.state_dict())
        return model

    def freeze_encoders(self, modalities=MODALITIES) -> None:
        """Freeze the text/audio/video models (encoder and head): no gradients, kept in eval mode (no dropout) even
        under `model.train()`, and run without autograd. The fusion stays trainable."""
        for modality in modalities:
            submodel = self.unimodal_model(modality)
            submodel.requires_grad_(False)
            submodel.eval()
            self._frozen_modalities.add(modality)

    def unfreeze_encoders(self, modalities=MODALITIES) -> None:
        for modality in modalities:
            submodel = self.unimodal_model(modality)
            submodel.requires_grad_(True)
            submodel.train(self.training)
            self._frozen_modalities.discard(modality)

    def train(self, mode: bool = True):
        super().train(mode)
        for modality in getattr(self, "_frozen_modalities", ()):
            self.unimodal_model(modality).eval()
        return self

    def _encode(self, modality: str, **inputs) -> torch.Tensor:
        submodel = self.unimodal_model(modality)
        if modality in self._frozen_modalities:
            with torch.no_grad():
                return submodel(**inputs, return_dict=True).features
        return submodel(**inputs, return_dict=True).features

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        speaker_ids: torch.Tensor | None = None,
        utterance_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        conversation_index: torch.Tensor | None = None,
        utterance_index: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MagtkdEmotionRecognitionOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, input_values, audio_attention_mask, pixel_values, speaker_ids, utterance_mask,
                conversation_index, utterance_index: the [`MagtkdProcessor`] output as it is (see its docstring).
            labels (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): -100 = ignore.
            text_features, audio_features, video_features (`torch.FloatTensor` of shape `(total_utterances,
                hidden_size)`, *optional*): a modality's features instead of its encoder inputs.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if speaker_ids is None or utterance_mask is None:
            raise ValueError("`speaker_ids` and `utterance_mask` (the processor's conversation structure) are required.")
        given = {
            "text": (text_features, {"input_ids": input_ids, "attention_mask": attention_mask}, ("input_ids",)),
            "audio": (
                audio_features,
                {"input_values": input_values, "attention_mask": audio_attention_mask},
                ("input_values",),
            ),
            "video": (video_features, {"pixel_values": pixel_values}, ("pixel_values",)),
        }
        features = {}
        for modality, (precomputed, inputs, required) in given.items():
            if precomputed is not None:
                features[modality] = precomputed
                continue
            missing = [name for name in required if inputs[name] is None]
            if missing:
                raise ValueError(
                    f"No {modality} input: give the processor's {', '.join(f'`{m}`' for m in missing)} (process with "
                    f"the {modality} modality) or precomputed `{modality}_features`."
                )
            features[modality] = self._encode(modality, **inputs)

        dtype = self.fusion.text_head.weight.dtype
        grouped = {
            modality: regroup_utterances(value.to(dtype), utterance_mask, conversation_index, utterance_index)
            for modality, value in features.items()
        }
        fused = self.fusion(
            text_features=grouped["text"],
            audio_features=grouped["audio"],
            video_features=grouped["video"],
            speaker_ids=speaker_ids,
            attention_mask=utterance_mask,
            labels=labels,
            return_dict=True,
        )
        output = MagtkdEmotionRecognitionOutput(
            loss=fused.loss,
            logits=fused.logits,
            audio_logits=fused.audio_logits,
            video_logits=fused.video_logits,
            text_features=features["text"],
            audio_features=features["audio"],
            video_features=features["video"],
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "MagtkdAudioModel",
    "MagtkdEmotionRecognitionOutput",
    "MagtkdEncoderPreTrainedModel",
    "MagtkdForEmotionRecognition",
    "MagtkdFusionModel",
    "MagtkdFusionOutput",
    "MagtkdPreTrainedModel",
    "MagtkdTextModel",
    "MagtkdUnimodalOutput",
    "MagtkdVideoModel",
    "regroup_utterances",
]
