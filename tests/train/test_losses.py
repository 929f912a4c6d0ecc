import math

import numpy as np
import pytest
import torch
from torch import nn

from dlrig.errors import UserError
from dlrig.train.losses import (
    CrossEntropy,
    FocalLoss,
    GeneralizedCrossEntropy,
    LogitAdjustedCrossEntropy,
    SymmetricCrossEntropy,
    build_loss,
    cross_entropy_grad,
    cross_entropy_rows,
)

# The 3-sample example every known answer below is computed from by hand (plain math, no torch).
LOGITS = [[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 3.0]]
TARGET = [0, 2, 2]
K = 3


def softmax_row(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


P = [softmax_row(z) for z in LOGITS]
P_Y = [P[i][t] for i, t in enumerate(TARGET)]


def logits():
    return torch.tensor(LOGITS, requires_grad=True)


def target():
    return torch.tensor(TARGET)


def close(a, b, tol=1e-6):
    return abs(float(torch.as_tensor(a).detach()) - float(torch.as_tensor(b).detach())) < tol


def test_cross_entropy_known_answer_and_torch_oracle():
    ce = sum(-math.log(p) for p in P_Y) / 3
    assert close(CrossEntropy(K)(logits(), target()), ce)
    w, eps = [1.0, 2.0, 0.5], 0.1
    # torch's weighted, smoothed CE: (1-eps) w_y (-log p_y) + eps/K sum_c w_c (-log p_c), over sum w_y.
    per = [
        (1 - eps) * w[t] * -math.log(P[i][t]) + eps / K * sum(w[c] * -math.log(P[i][c]) for c in range(K))
        for i, t in enumerate(TARGET)
    ]
    hand = sum(per) / sum(w[t] for t in TARGET)
    ours = CrossEntropy(K, label_smoothing=eps, class_weight=np.array(w))(logits(), target())
    oracle = nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=eps)(logits(), target())
    assert close(ours, hand) and close(ours, oracle)


def stacked_logits(seed=0):
    """Logits of 3 models x 5 rows x 4 classes (a stack), their targets, and one smoothing per model."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 5, 4, generator=gen) * 3
    t = torch.randint(0, 4, (3, 5), generator=gen)
    return z, t, [0.0, 0.1, 0.35]


def test_cross_entropy_rows_is_torchs_per_row_loss():
    z, t, eps = stacked_logits()
    logp = torch.log_softmax(z, -1)
    for e in eps:  # one float: F.cross_entropy's own numbers, for any leading shape
        want = nn.CrossEntropyLoss(label_smoothing=e, reduction="none")(z.view(-1, 4), t.view(-1)).view(3, 5)
        assert torch.equal(cross_entropy_rows(logp, t, e), want), e
    # one smoothing per model (a tensor [M, 1]): the same numbers, to float32 rounding
    rows = cross_entropy_rows(logp, t, torch.tensor(eps).view(3, 1))
    for m, e in enumerate(eps):
        want = nn.CrossEntropyLoss(label_smoothing=e, reduction="none")(z[m], t[m])
        assert torch.allclose(rows[m], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("smoothing", ["none", "float", "per_model"])
def test_cross_entropy_grad_is_autograd_of_the_loss(smoothing):
    """The hand-written gradient the stacked trainer back-propagates, against autograd of losses.py's
    CrossEntropy (fit()'s nn.CrossEntropyLoss), model by model."""
    z, t, eps = stacked_logits(1)
    if smoothing == "none":
        eps, arg = [0.0] * 3, 0.0
    elif smoothing == "float":
        eps, arg = [0.2] * 3, 0.2
    else:
        arg = torch.tensor(eps).view(3, 1)
    grad = cross_entropy_grad(torch.softmax(z, -1), t, arg)
    for m, e in enumerate(eps):
        zm = z[m].clone().requires_grad_()
        CrossEntropy(4, label_smoothing=e).per_sample(zm, t[m]).sum().backward()
        assert torch.allclose(grad[m], zm.grad, rtol=1e-5, atol=1e-6), m
    assert torch.allclose(grad.sum(-1), torch.zeros(3, 5), atol=1e-6)  # softmax and q both sum to 1


def test_gce_known_answer_and_limits():
    q = 0.7
    hand = sum((1 - p**q) / q for p in P_Y) / 3
    assert close(GeneralizedCrossEntropy(K, q=q)(logits(), target()), hand)
    ce = sum(-math.log(p) for p in P_Y) / 3
    assert close(GeneralizedCrossEntropy(K, q=1e-6)(logits(), target()), ce, tol=1e-4)  # q -> 0: CE
    mae_half = sum(1 - p for p in P_Y) / 3  # q = 1: 1 - p_y, half the MAE between one-hot and p
    mae = sum(sum(abs((c == t) - P[i][c]) for c in range(K)) for i, t in enumerate(TARGET)) / 3
    assert close(GeneralizedCrossEntropy(K, q=1.0)(logits(), target()), mae_half)
    assert close(mae, 2 * mae_half)
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        GeneralizedCrossEntropy(K, q=0.0)


def test_sce_matches_its_formula_with_log_zero_clamped_to_minus_four():
    alpha, beta = 0.1, 1.0
    ce = [-math.log(p) for p in P_Y]
    # RCE = -sum_k p_k log(onehot_k), log 0 -> -4, log 1 = 0.
    rce = [-sum(P[i][c] * (0.0 if c == t else -4.0) for c in range(K)) for i, t in enumerate(TARGET)]
    hand = sum(alpha * a + beta * b for a, b in zip(ce, rce, strict=True)) / 3
    assert close(SymmetricCrossEntropy(K, alpha, beta)(logits(), target()), hand)
    assert close(rce[0], 4 * (1 - P_Y[0]))


def test_focal_known_answer_and_gamma_zero_is_weighted_ce():
    gamma = 2.0
    hand = sum((1 - p) ** gamma * -math.log(p) for p in P_Y) / 3
    assert close(FocalLoss(K, gamma)(logits(), target()), hand)
    w = torch.tensor([0.25, 1.0, 2.0])
    focal0 = FocalLoss(K, 0.0, class_weight=w.numpy())(logits(), target())
    assert close(focal0, nn.CrossEntropyLoss(weight=w)(logits(), target()))
    alpha_hand = sum(w[t].item() * (1 - P[i][t]) ** gamma * -math.log(P[i][t]) for i, t in enumerate(TARGET))
    alpha_hand /= sum(w[t].item() for t in TARGET)
    assert close(FocalLoss(K, gamma, class_weight=w.numpy())(logits(), target()), alpha_hand)


def test_logit_adjusted_ce_adds_tau_log_prior():
    prior, tau = [0.6, 0.3, 0.1], 1.5
    shifted = [[z + tau * math.log(p) for z, p in zip(row, prior, strict=True)] for row in LOGITS]
    hand = sum(-math.log(softmax_row(z)[t]) for z, t in zip(shifted, TARGET, strict=True)) / 3
    loss = LogitAdjustedCrossEntropy(K, np.array(prior), tau=tau)
    assert close(loss(logits(), target()), hand, tol=1e-5)
    # tau = 0 and a uniform prior are both plain CE.
    ce = CrossEntropy(K)(logits(), target())
    assert close(LogitAdjustedCrossEntropy(K, np.array(prior), tau=0.0)(logits(), target()), ce)
    assert close(LogitAdjustedCrossEntropy(K, np.ones(3) / 3)(logits(), target()), ce)


ALL = [
    CrossEntropy(K, 0.1, np.array([1.0, 2.0, 0.5])),
    GeneralizedCrossEntropy(K, 0.5, np.array([1.0, 2.0, 0.5])),
    SymmetricCrossEntropy(K, 0.1, 1.0, np.array([1.0, 2.0, 0.5])),
    FocalLoss(K, 2.0, np.array([1.0, 2.0, 0.5])),
    LogitAdjustedCrossEntropy(K, np.array([0.5, 0.3, 0.2])),
]


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_sample_weights_give_the_weighted_mean(loss):
    z, t = logits(), target()
    w = loss.weight if loss.weight is not None else torch.ones(K)
    per = loss.per_sample(z, t)
    s = torch.tensor([0.5, 0.0, 2.0])
    expected = (s * per).sum() / (s * w[t]).sum()
    assert close(loss(z, t, sample_weight=s), expected)
    assert close(loss(z, t, sample_weight=torch.ones(3)), loss(z, t))
    zero = loss(z, t, sample_weight=torch.zeros(3))
    assert zero.item() == 0.0  # a batch of dropped rows: 0, not NaN
    zero.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_gradients_stay_finite_for_saturated_logits(loss):
    z = torch.tensor([[80.0, -80.0, 0.0], [-80.0, 80.0, 0.0]], requires_grad=True)
    value = loss(z, torch.tensor([0, 0]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    focal = FocalLoss(K, gamma=0.5)
    z2 = torch.tensor([[80.0, -80.0, 0.0]], requires_grad=True)
    focal(z2, torch.tensor([0])).backward()
    assert torch.isfinite(z2.grad).all()


@pytest.mark.parametrize("name", ["ce", "gce", "sce", "focal", "logit_adjusted"])
def test_every_loss_trains_a_linear_model(blobs, name):
    X, y = blobs
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], 3)
    loss_fn = build_loss(name, n_classes=3, class_prior=np.bincount(y) / len(y))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    first = loss_fn(model(Xt), yt).item()
    for _ in range(100):
        opt.zero_grad()
        loss_fn(model(Xt), yt).backward()
        opt.step()
    assert loss_fn(model(Xt), yt).item() < first
    assert (model(Xt).argmax(1) == yt).float().mean() > 0.9


def test_build_loss_chooses_and_refuses():
    w = np.array([1.0, 2.0, 3.0])
    assert isinstance(build_loss("ce", n_classes=3, label_smoothing=0.1, class_weight=w), CrossEntropy)
    assert build_loss("gce", n_classes=3, gce_q=0.3).q == 0.3
    sce = build_loss("sce", n_classes=3, sce_alpha=0.5, sce_beta=2.0)
    assert (sce.alpha, sce.beta) == (0.5, 2.0)
    assert build_loss("focal", n_classes=3, focal_gamma=1.0).gamma == 1.0
    la = build_loss("logit_adjusted", n_classes=3, class_prior=np.array([2, 1, 1]), tau=1.0)
    assert torch.allclose(la.adjustment, torch.log(torch.tensor([0.5, 0.25, 0.25])))
    with pytest.raises(UserError, match="loss must be one of"):
        build_loss("hinge", n_classes=3)
    with pytest.raises(UserError, match="label_smoothing=0.1 works only with"):
        build_loss("gce", n_classes=3, label_smoothing=0.1)
    with pytest.raises(ValueError, match="needs class_prior"):
        build_loss("logit_adjusted", n_classes=3)
    with pytest.raises(ValueError, match="one entry per class"):
        build_loss("ce", n_classes=3, class_weight=np.ones(2))
    with pytest.raises(ValueError, match="logits must be"):
        build_loss("ce", n_classes=4)(logits(), target())


def test_class_weights_follow_the_module_to_a_device_and_into_state_dict():
    loss = build_loss("ce", n_classes=3, class_weight=np.array([1.0, 2.0, 3.0]))
    assert "weight" in loss.state_dict()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    moved = loss.to(device)
    value = moved(logits().to(device), target().to(device))
    assert close(value.cpu(), loss.to("cpu")(logits(), target()), tol=1e-5)
