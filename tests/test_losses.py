import math

import pytest
import torch

from magtkd_hf.losses import (
    IGNORE_INDEX,
    classification_loss,
    dist_logit_loss,
    distillation_loss,
    feature_relation_loss,
    fusion_loss,
    labelled_positions,
)


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm() + 1e-8))


def direct_dist(student, teacher, tau, beta, gamma):
    p_s = torch.softmax(student / tau, dim=1)
    p_t = torch.softmax(teacher / tau, dim=1)
    n, c = p_s.shape
    inter = 1 - sum(pearson(p_s[i], p_t[i]) for i in range(n)) / n
    intra = 1 - sum(pearson(p_s[:, j], p_t[:, j]) for j in range(c)) / c
    return tau**2 * (beta * inter + gamma * intra)


def direct_feature_loss(student, teacher, t):
    h_t = teacher / teacher.norm(dim=1, keepdim=True)
    h_s = student / student.norm(dim=1, keepdim=True)
    p = torch.softmax(h_t @ h_t.T / t, dim=1)
    q = torch.softmax(h_t @ h_s.T / t, dim=1)
    n = p.shape[0]
    return float(sum(p[i, j] * math.log(p[i, j] / q[i, j]) for i in range(n) for j in range(n)) / n)


def test_dist_loss_matches_the_formula():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    for tau, beta, gamma in ((2.0, 1.0, 1.0), (1.0, 0.5, 2.0)):
        expected = direct_dist(student.double(), teacher.double(), tau, beta, gamma)
        assert abs(float(dist_logit_loss(student, teacher, tau, beta, gamma)) - expected) < 1e-5


def test_dist_loss_is_zero_when_student_equals_teacher_and_grads_reach_the_student():
    teacher = torch.randn(6, 3)
    assert abs(float(dist_logit_loss(teacher.clone(), teacher))) < 1e-5
    student = torch.randn(6, 3, requires_grad=True)
    loss = dist_logit_loss(student, teacher)
    assert loss > 0
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_feature_relation_loss_matches_the_formula():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    for t in (1.0, 0.5):
        expected = direct_feature_loss(student.double(), teacher.double(), t)
        assert abs(float(feature_relation_loss(student, teacher, t)) - expected) < 1e-5
    assert abs(float(feature_relation_loss(teacher, teacher))) < 1e-6


def test_distillation_loss_weights_each_term():
    generator = torch.Generator().manual_seed(2)
    z_s, z_t = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    h_s, h_t = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 0])
    ce = torch.nn.functional.cross_entropy(z_s, labels)
    total = distillation_loss(z_s, z_t, labels, h_s, h_t, logit_weight=0.1, feature_weight=1.0)
    expected = ce + 0.1 * dist_logit_loss(z_s, z_t) + feature_relation_loss(h_s, h_t)
    assert torch.allclose(total, expected)
    assert torch.allclose(distillation_loss(z_s, z_t, labels, logit_weight=0.0), ce)


def test_fusion_loss_adds_weighted_anchor_terms_and_teacher_gets_gradients():
    generator = torch.Generator().manual_seed(3)
    z, z_a, z_v = (torch.randn(6, 3, generator=generator, requires_grad=True) for _ in range(3))
    f_t, f_a, f_v = (torch.randn(6, 8, generator=generator) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ce = torch.nn.functional.cross_entropy
    loss = fusion_loss(z, z_a, z_v, f_t, f_a, f_v, labels, audio_weight=0.7, video_weight=0.8, feature_loss=True)
    k_a = ce(z_a, labels) + dist_logit_loss(z_a, z) + feature_relation_loss(f_a, f_t)
    k_v = ce(z_v, labels) + dist_logit_loss(z_v, z) + feature_relation_loss(f_v, f_t)
    assert torch.allclose(loss, ce(z, labels) + 0.7 * k_a + 0.8 * k_v)
    z_only = z.detach().requires_grad_()
    fusion_loss(z_only, z_a.detach(), z_v.detach(), f_t, f_a, f_v, labels, 0.0, 0.0, False).backward()
    ce_grad = z_only.grad.clone()
    z_only.grad = None
    fusion_loss(z_only, z_a.detach(), z_v.detach(), f_t, f_a, f_v, labels, 0.7, 0.8, False).backward()
    assert not torch.allclose(z_only.grad, ce_grad)  # the DIST terms reach the (not detached) teacher


def test_classification_loss_is_cross_entropy_over_the_labelled_samples():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 3, generator=generator, requires_grad=True)
    labels = torch.tensor([0, -100, 2, 1, -100])
    keep = labels != -100
    assert labelled_positions(labels).tolist() == keep.tolist()
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    # Every label ignored: 0 with a graph (not F.cross_entropy's NaN), so `backward` still works.
    ignored = torch.full_like(labels, IGNORE_INDEX)
    assert not labelled_positions(ignored).any()
    zero = classification_loss(logits, ignored)
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_classification_loss_refuses_labels_of_another_shape():
    logits = torch.randn(4, 3)
    for labels in (torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"expected \(4,\)"):
            classification_loss(logits, labels)


SOME_IGNORED, ONE_LABELLED = [3, -100, 1, -100, -100, 6, 0, -100, 2], [-100] * 8 + [4]
ALL_LABELLED = [5, 0, 1, 2, 3, 4, 6, 1, 2]


@pytest.mark.parametrize("labels", [SOME_IGNORED, ONE_LABELLED, ALL_LABELLED])
@pytest.mark.parametrize("class_weights", [None, [0.5, 1.0, 2.0, 1.0, 1.0, 3.0, 1.0]])
def test_ignored_labels_are_masked_as_if_their_rows_were_removed(labels, class_weights):
    """The masked losses (exportable: no branch, no data-dependent shape) equal the losses of the labelled rows alone,
    values and gradients."""
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(9, size, generator=generator, requires_grad=True) for size in (7, 7, 7, 16, 16, 16)]
    labels = torch.tensor(labels)
    keep = labels != IGNORE_INDEX
    settings = dict(audio_weight=0.3, video_weight=0.5, feature_loss=True, class_weights=class_weights)
    masked = fusion_loss(*tensors, labels, **settings)
    masked_grads = torch.autograd.grad(masked, tensors)
    removed = fusion_loss(*(tensor[keep] for tensor in tensors), labels[keep], **settings)
    torch.testing.assert_close(masked, removed)
    for masked_grad, removed_grad in zip(masked_grads, torch.autograd.grad(removed, tensors)):
        torch.testing.assert_close(masked_grad, removed_grad)


def test_no_labelled_row_gives_a_zero_loss_with_zero_gradients():
    tensors = [torch.randn(4, size, requires_grad=True) for size in (7, 7, 7, 16, 16, 16)]
    loss = fusion_loss(*tensors, torch.full((4,), IGNORE_INDEX), 0.3, 0.5, True)
    assert loss.item() == 0.0
    assert all(grad.abs().sum() == 0 for grad in torch.autograd.grad(loss, tensors))
