"""MAGTKD's distillation losses and the fusion loss.

The losses take per-sample tensors: logits (n, C), features (n, H), labels (n,). Labels of -100 (ignore) are left out
by masked means (`mask`, from `labelled_positions`), not by selecting rows: no shape or branch depends on the labels, so
the training graph exports (`torch.export`) and a batch without labels gives a zero loss (with a graph), not NaN.
"""

import torch
import torch.nn.functional as F


# The label to ignore (torch's cross-entropy default). The processor declares it too (processors/conversation.py): each
# side travels alone as a saved folder's remote code (tests/test_remote_code.py checks that the two agree).
IGNORE_INDEX = -100


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """The boolean mask of the labels that are not `IGNORE_INDEX`."""
    return labels != IGNORE_INDEX


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of `values` (n,) over the rows where `mask` (n,) holds (all when None), weighted by `weights` (n,) when
    given; 0 where no row holds."""
    weights = torch.ones_like(values) if weights is None else weights.to(values.dtype)
    if mask is not None:
        weights = weights * mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=torch.finfo(values.dtype).tiny)


def class_weight_tensor(class_weights, logits: torch.Tensor) -> torch.Tensor | None:
    """A config's `class_weights` (a list, or None) as a float32 tensor on the logits' device."""
    return None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32, device=logits.device)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights=None) -> torch.Tensor:
    """Cross-entropy of `logits` (n, C) against `labels` (n,) over the labelled samples (weighted by `class_weights`,
    C floats, when given); 0 (with a graph) when every label is ignored, where `F.cross_entropy` would give NaN."""
    labels = labels.to(logits.device)
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected ({logits.shape[0]},).")
    return cross_entropy(logits.float(), labels, class_weights)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_weights=None) -> torch.Tensor:
    """`F.cross_entropy` (class-weighted mean) over the labels that are not `IGNORE_INDEX`; 0 where there is none."""
    labelled = labelled_positions(labels)
    safe_labels = labels.masked_fill(~labelled, 0)
    losses = F.cross_entropy(logits, safe_labels, reduction="none")
    weights = class_weight_tensor(class_weights, logits)
    return masked_mean(losses, labelled, None if weights is None else weights[safe_labels])


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of `a` and `b` (n, d) -> (n,): cosine similarity of the centred rows."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                    inter_weight: float = 1.0, intra_weight: float = 1.0,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """
    The DIST logit-relation loss (Huang et al. 2022) of (n, C) logits, a scalar:
    `tau^2 * (inter_weight * inter + intra_weight * intra)`, where `inter = 1 - mean_n Pearson(p_s[n, :], p_t[n, :])`
    (across classes) and `intra = 1 - mean_c Pearson(p_s[:, c], p_t[:, c])` (across the batch), `p = softmax(z / tau)`.
    With `mask` (n,), over the rows where it holds only.
    """
    student_probs = (student_logits / temperature).softmax(dim=1)
    teacher_probs = (teacher_logits / temperature).softmax(dim=1)
    inter = 1 - masked_mean(pearson_correlation(student_probs, teacher_probs), mask)
    if mask is not None:  # rows left out: centred on the kept rows' mean, then zero, so they add nothing
        kept = mask.to(student_probs.dtype)[:, None]
        student_probs, teacher_probs = (
            (probs - (probs * kept).sum(0) / kept.sum().clamp(min=1)) * kept for probs in (student_probs, teacher_probs)
        )
    intra = 1 - pearson_correlation(student_probs.t(), teacher_probs.t()).mean()
    return temperature**2 * (inter_weight * inter + intra_weight * intra)


def feature_relation_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                          temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """
    KL(softmax(S_tt / t) || softmax(S_ts / t)) of (n, H) features, averaged over rows (a scalar), where S_tt = h_t h_t^T
    and S_ts = h_t h_s^T are the cosine-similarity matrices of the unit-length teacher and student features. With
    `mask` (n,), over the rows and columns where it holds only.
    """
    teacher = F.normalize(teacher_features, p=2, dim=1)
    student = F.normalize(student_features, p=2, dim=1)
    teacher_relation = teacher @ teacher.t() / temperature
    cross_relation = teacher @ student.t() / temperature
    if mask is not None:  # columns left out get a probability of exactly 0 (a finite fill: 0 * fill stays 0 in the KL)
        left_out = ~mask.bool()[None, :]
        lowest = torch.finfo(teacher_relation.dtype).min
        teacher_relation, cross_relation = (x.masked_fill(left_out, lowest) for x in (teacher_relation, cross_relation))
    # The KL from log-probabilities (not `F.kl_div` on probabilities, whose gradient at a probability of 0 is NaN).
    teacher_log_probs = torch.log_softmax(teacher_relation, dim=1)
    row_divergence = (teacher_log_probs.exp() * (teacher_log_probs - torch.log_softmax(cross_relation, dim=1))).sum(1)
    return masked_mean(row_divergence, mask)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      student_features: torch.Tensor | None = None, teacher_features: torch.Tensor | None = None,
                      logit_weight: float = 1.0, feature_weight: float = 0.0, logit_temperature: float = 2.0,
                      inter_weight: float = 1.0, intra_weight: float = 1.0, feature_temperature: float = 1.0,
                      class_weights=None) -> torch.Tensor:
    """
    `CE(z_s, y) + logit_weight * L_logit(z_s, z_t) + feature_weight * L_feat(h_s, h_t)`: the student objective of
    stage 2 and the anchor term K of the fusion loss, over the samples whose label is not `IGNORE_INDEX` (0 where there
    is none). The feature term is skipped when `feature_weight` is 0. Nothing is detached: the caller decides whether
    the teacher gets gradients. `class_weights` (C floats, optional) weight the cross-entropy.
    """
    labelled = labelled_positions(labels)
    loss = cross_entropy(student_logits, labels, class_weights)
    if logit_weight:
        loss = loss + logit_weight * dist_logit_loss(
            student_logits, teacher_logits, logit_temperature, inter_weight, intra_weight, mask=labelled
        )
    if feature_weight:
        loss = loss + feature_weight * feature_relation_loss(
            student_features, teacher_features, feature_temperature, mask=labelled
        )
    return loss * labelled.any()


def fusion_loss(logits: torch.Tensor, audio_logits: torch.Tensor, video_logits: torch.Tensor, text_anchor: torch.Tensor,
                audio_anchor: torch.Tensor, video_anchor: torch.Tensor, labels: torch.Tensor, audio_weight: float,
                video_weight: float, feature_loss: bool, logit_temperature: float = 2.0, inter_weight: float = 1.0,
                intra_weight: float = 1.0, feature_temperature: float = 1.0, class_weights=None) -> torch.Tensor:
    """
    `CE(z, y) + audio_weight * K(z_a', z, F_a, F_t) + video_weight * K(z_v', z, F_v, F_t)`: the
    audio and video anchors' heads are distilled from the final prediction `z`, which is not detached (as released).
    Over the utterances whose label is not `IGNORE_INDEX` (0 where there is none).

    Args:
        logits, audio_logits, video_logits (`torch.Tensor` of shape `(n, C)`): over n utterances.
        text_anchor, audio_anchor, video_anchor (`torch.Tensor` of shape `(n, H)`).
        labels (`torch.Tensor` of shape `(n,)`).
        class_weights (C floats, optional): weights of every cross-entropy term.
    """
    anchor_term = dict(
        logit_weight=1.0, feature_weight=1.0 if feature_loss else 0.0, logit_temperature=logit_temperature,
        inter_weight=inter_weight, intra_weight=intra_weight, feature_temperature=feature_temperature,
        class_weights=class_weights,
    )
    loss = cross_entropy(logits, labels, class_weights)
    anchors = ((audio_weight, audio_logits, audio_anchor), (video_weight, video_logits, video_anchor))
    for weight, anchor_logits, anchor in anchors:
        if weight:
            loss = loss + weight * distillation_loss(anchor_logits, logits, labels, anchor, text_anchor, **anchor_term)
    return loss
