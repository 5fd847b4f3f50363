"""MAGTKD's distillation losses and the fusion loss.

The relation losses take per-sample tensors: logits (n, C), features (n, H), labels (n,) of the labelled utterances;
`labelled_positions` and `classification_loss` are the one place where labels of -100 (ignore) are filtered out.
"""

import torch
import torch.nn.functional as F


# The label to ignore (torch's cross-entropy default). The processor declares it too (processors/conversation.py): each
# side travels alone as a saved folder's remote code (tests/test_remote_code.py checks that the two agree).
IGNORE_INDEX = -100


def labelled_positions(labels: torch.Tensor) -> torch.Tensor | None:
    """The boolean mask of the labels that are not `IGNORE_INDEX`, or None when there is none."""
    labelled = labels != IGNORE_INDEX
    return labelled if bool(labelled.any()) else None


def class_weight_tensor(class_weights, logits: torch.Tensor) -> torch.Tensor | None:
    """A config's `class_weights` (a list, or None) as a float32 tensor on the logits' device."""
    return None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32, device=logits.device)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights=None) -> torch.Tensor:
    """Cross-entropy of `logits` (n, C) against `labels` (n,) over the labelled samples (weighted by `class_weights`,
    C floats, when given); 0 (with a graph) when every label is ignored, where `F.cross_entropy` would give NaN."""
    labels = labels.to(logits.device)
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected ({logits.shape[0]},).")
    labelled = labelled_positions(labels)
    if labelled is None:
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled].float(), labels[labelled], weight=class_weight_tensor(class_weights, logits))


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of `a` and `b` (n, d) -> (n,): cosine similarity of the centred rows."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                    inter_weight: float = 1.0, intra_weight: float = 1.0) -> torch.Tensor:
    """
    The DIST logit-relation loss (Huang et al. 2022) of (n, C) logits, a scalar:
    `tau^2 * (inter_weight * inter + intra_weight * intra)`, where `inter = 1 - mean_n Pearson(p_s[n, :], p_t[n, :])`
    (across classes) and `intra = 1 - mean_c Pearson(p_s[:, c], p_t[:, c])` (across the batch), `p = softmax(z / tau)`.
    """
    student_probs = (student_logits / temperature).softmax(dim=1)
    teacher_probs = (teacher_logits / temperature).softmax(dim=1)
    inter = 1 - pearson_correlation(student_probs, teacher_probs).mean()
    intra = 1 - pearson_correlation(student_probs.t(), teacher_probs.t()).mean()
    return temperature**2 * (inter_weight * inter + intra_weight * intra)


def feature_relation_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                          temperature: float = 1.0) -> torch.Tensor:
    """
    KL(softmax(S_tt / t) || softmax(S_ts / t)) of (n, H) features, averaged over rows (a scalar), where S_tt = h_t h_t^T
    and S_ts = h_t h_s^T are the cosine-similarity matrices of the unit-length teacher and student features.
    """
    teacher = F.normalize(teacher_features, p=2, dim=1)
    student = F.normalize(student_features, p=2, dim=1)
    teacher_relation = teacher @ teacher.t()
    cross_relation = teacher @ student.t()
    return F.kl_div(
        torch.log_softmax(cross_relation / temperature, dim=1),
        torch.softmax(teacher_relation / temperature, dim=1),
        reduction="batchmean",
    )


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      student_features: torch.Tensor | None = None, teacher_features: torch.Tensor | None = None,
                      logit_weight: float = 1.0, feature_weight: float = 0.0, logit_temperature: float = 2.0,
                      inter_weight: float = 1.0, intra_weight: float = 1.0, feature_temperature: float = 1.0,
                      class_weights=None) -> torch.Tensor:
    """
    `CE(z_s, y) + logit_weight * L_logit(z_s, z_t) + feature_weight * L_feat(h_s, h_t)`: the student objective of
    stage 2 and the anchor term K of the fusion loss. The feature term is skipped
    when `feature_weight` is 0. Nothing is detached: the caller decides whether the teacher gets gradients.
    `class_weights` (C floats, optional) weight the cross-entropy.
    """
    loss = F.cross_entropy(student_logits, labels, weight=class_weight_tensor(class_weights, student_logits))
    if logit_weight:
        loss = loss + logit_weight * dist_logit_loss(
            student_logits, teacher_logits, logit_temperature, inter_weight, intra_weight
        )
    if feature_weight:
        loss = loss + feature_weight * feature_relation_loss(student_features, teacher_features, feature_temperature)
    return loss


def fusion_loss(logits: torch.Tensor, audio_logits: torch.Tensor, video_logits: torch.Tensor, text_anchor: torch.Tensor,
                audio_anchor: torch.Tensor, video_anchor: torch.Tensor, labels: torch.Tensor, audio_weight: float,
                video_weight: float, feature_loss: bool, logit_temperature: float = 2.0, inter_weight: float = 1.0,
                intra_weight: float = 1.0, feature_temperature: float = 1.0, class_weights=None) -> torch.Tensor:
    """
    `CE(z, y) + audio_weight * K(z_a', z, F_a, F_t) + video_weight * K(z_v', z, F_v, F_t)`: the
    audio and video anchors' heads are distilled from the final prediction `z`, which is not detached (as released).

    Args:
        logits, audio_logits, video_logits (`torch.Tensor` of shape `(n, C)`): over the n labelled utterances.
        text_anchor, audio_anchor, video_anchor (`torch.Tensor` of shape `(n, H)`).
        labels (`torch.Tensor` of shape `(n,)`).
        class_weights (C floats, optional): weights of every cross-entropy term.
    """
    anchor_term = dict(
        logit_weight=1.0, feature_weight=1.0 if feature_loss else 0.0, logit_temperature=logit_temperature,
        inter_weight=inter_weight, intra_weight=intra_weight, feature_temperature=feature_temperature,
        class_weights=class_weights,
    )
    loss = F.cross_entropy(logits, labels, weight=class_weight_tensor(class_weights, logits))
    anchors = ((audio_weight, audio_logits, audio_anchor), (video_weight, video_logits, video_anchor))
    for weight, anchor_logits, anchor in anchors:
        if weight:
            loss = loss + weight * distillation_loss(anchor_logits, logits, labels, anchor, text_anchor, **anchor_term)
    return loss
