"""Availability poisons beside the paper's alignment, with the same API.

* :class:`AdversarialPoison` (``adversarial``) — class-targeted adversarial examples of the trained
  surrogate (Fowl et al., "Adversarial Examples Make Strong Poisons", NeurIPS 2021): every image of
  class y is pushed toward class (y + 1) mod C by minimising CE(F(x + Δ), (y + 1) mod C). A model
  trained on them learns the non-robust features of the wrong class, and generalises badly on clean
  data. Each image's objective is its own, so the best restart is kept per image.
* :class:`ErrorMinimizing` (``error-minimizing``) and :class:`ClasswiseErrorMinimizing`
  (``error-minimizing-classwise``) — Unlearnable Examples' bi-level min-min noise, sample-wise or
  one Δ per class, crafted with a model trained alongside (the fixed-θ variant is
  :class:`~faceguard.attacks.baselines.Unlearnable`). They need the whole corpus in one call.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceguard.attacks.base import Perturbation, PGDAttack
from faceguard.progress import RoundsProgress, progress_shown
from faceguard.settings import CraftSettings


class AdversarialPoison(PGDAttack):
    """``AdversarialPoison(model, eps=8)(x, y)``: each image toward class ``(y + 1) mod C``.

    ``classes`` is C; without it C is read off the model's output width on the first image.
    ``target_of`` replaces the map from ``y`` to the target class given to ``loss_fn`` (protect
    passes face indices as ``y`` and maps them to the head row after each face's identity).
    """

    name = "adversarial"
    per_image = True
    takes_classes = True

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, *, classes: int | None = None,
                 target_of: Callable[[Tensor], Tensor] | None = None, **kwargs: object) -> None:
        super().__init__(model, settings, **kwargs)
        if classes is not None and classes < 2:
            raise ValueError(f"a class-targeted poison needs at least 2 classes, got {classes}")
        self.classes, self.target_of = classes, target_of

    def target_classes(self, y: Tensor) -> Tensor:
        """The class each image is pushed toward: the next one, cyclically (or ``target_of(y)``)."""
        return self.target_of(y) if self.target_of is not None else (y + 1) % self.classes

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.classes is None and self.target_of is None:
            self.classes = self.output_width(self.model_input(x[:1], y[:1]))
        return super().perturb(x, y)

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self.model, x_in, self.target_classes(y)).sum()

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.loss_fn(self.model, x_in, self.target_classes(y))


class ErrorMinimizing(Perturbation):
    """Error-minimizing noise (Huang et al., "Unlearnable Examples", ICLR 2021): bi-level min-min.

    ``ErrorMinimizing(model, eps=8)(x, y)`` takes a whole corpus (its images must all be given at
    once: :attr:`corpus`) and alternates until a model trained on the perturbed corpus fits it. The
    model is a copy of ``model`` with freshly initialised weights (seeded by ``settings.seed``), as in
    the paper: a trained surrogate already fits its training images, so it would stop the loop
    before the noise carries anything.

    Δ starts at zero, or uniform in the ε-ball with ``settings.noise_start="uniform"``; then

    1. train that model for ``train_steps`` mini-batches (SGD, ``lr``, momentum 0.9,
       weight decay 5e-4, the settings' ``augment`` as training augmentation) on x + Δ;
    2. update Δ by ``settings.steps`` signed steps of ``settings.step_size`` · ε that *minimise*
       CE(F(x + Δ), y) with the model fixed (eval mode), batch by batch;
    3. stop when the model classifies ``stop_accuracy`` of x + Δ correctly (not before
       ``settings.min_rounds`` rounds), or after ``max_rounds`` (at least ``min_rounds``).

    The perturbation then carries an easy shortcut to the label, so a victim trained on it learns
    the shortcut instead of the images. ``classwise=True`` learns one Δ per class (per identity
    for faces), its step the sign of the class's summed gradient. ``model`` itself is not changed
    (a deep copy is trained); :attr:`rounds` and :attr:`train_accuracy` report how the last call ended,
    :attr:`noise` holds its raw Δ (one per class when class-wise, before the [0, 1] clamp of each
    image) and :attr:`trained` the copy trained alongside (in eval mode), so the noise can be applied
    to other images of the same classes and its effect measured. Each round is reported on stderr
    (:class:`~faceguard.progress.RoundsProgress`: round k of at least/at most N, the accuracy on
    x + Δ, the time left) when ``progress`` is True, or when it is None (the default) inside
    :func:`~faceguard.progress.showing_progress` ``(True)``.
    """

    name = "error-minimizing"
    corpus = True
    optimises = True

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, *, classwise: bool = False,
                 train_steps: int = 10, max_rounds: int = 10, stop_accuracy: float = 0.99, lr: float = 0.1,
                 loss_fn: object = None, params: object = None, preprocess: object = None,
                 progress: bool | None = None, **changes: object) -> None:
        super().__init__(model, settings, **changes)
        if loss_fn is not None or params is not None or preprocess is not None:
            raise ValueError("error-minimizing noise trains its own copy of a classifier: no loss_fn, params "
                             "or preprocess")
        if train_steps < 1 or max_rounds < 1 or not 0 < stop_accuracy <= 1:
            raise ValueError("need train_steps >= 1, max_rounds >= 1 and 0 < stop_accuracy <= 1")
        self.classwise, self.train_steps, self.max_rounds = classwise, train_steps, max_rounds
        self.stop_accuracy, self.lr, self.progress = stop_accuracy, lr, progress
        self.rounds, self.train_accuracy = 0, 0.0
        self.noise: Tensor | None = None
        self.trained: nn.Module | None = None

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        from faceguard.registry import AUGMENTATIONS, NO_AUGMENTATION

        model = copy.deepcopy(self.model)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(self.settings.seed)
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        augment = None if self.settings.augment == NO_AUGMENTATION else AUGMENTATIONS.get(self.settings.augment)()
        classes = int(y.max()) + 1
        delta = torch.zeros((classes, *x.shape[1:]) if self.classwise else x.shape, device=x.device)
        if self.settings.noise_start == "uniform":  # seeded by the call, as every random start
            delta.uniform_(-self.radius, self.radius)
        least = self.settings.min_rounds
        most = max(self.max_rounds, least)
        report = RoundsProgress(self.name, len(x), least, most, self.stop_accuracy,
                                self.train_steps + (self.settings.steps + 1) * len(self._batches(x)),
                                progress_shown(self.progress))
        try:
            self._alternate(model, optimizer, augment, x, y, delta, report)
        finally:
            report.close()
        self.noise, self.trained = delta, model.eval()
        return self.project(x, (delta[y] if self.classwise else delta).clone())

    def _alternate(self, model: nn.Module, optimizer: torch.optim.Optimizer, augment: Callable[[Tensor], Tensor] | None,
                   x: Tensor, y: Tensor, delta: Tensor, report: RoundsProgress) -> None:
        """The rounds: train the model, minimise Δ (in place), test whether to stop; each reported."""
        order: Iterator[Tensor] = iter(())
        least, most = report.least, report.most
        for rounds in range(1, most + 1):
            self.rounds = rounds
            report.begin_round(rounds)
            model.train()
            losses = torch.zeros((), device=x.device)
            for _ in range(self.train_steps):
                index = next(order, None)
                if index is None:
                    order = iter(self._batches(x, shuffle=True))
                    index = next(order)
                view = self._perturbed(x, y, delta, index)
                loss = F.cross_entropy(model(view if augment is None else augment(view)), y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses += loss.detach()
                report.tick()
            model.eval()
            report.phase("perturb")
            self._minimise(model, x, y, delta, report)
            report.phase("test")
            self.train_accuracy = self._accuracy(model, x, y, delta, report)
            report.end_round(rounds, self.train_accuracy, float(losses) / self.train_steps)
            if rounds >= least and self.train_accuracy >= self.stop_accuracy:
                return

    def _batches(self, x: Tensor, shuffle: bool = False) -> tuple[Tensor, ...]:
        """Index batches of ``settings.batch_size`` over the corpus, in order or shuffled (global RNG)."""
        order = torch.randperm(len(x), device=x.device) if shuffle else torch.arange(len(x), device=x.device)
        return order.split(self.settings.batch_size)

    def _perturbed(self, x: Tensor, y: Tensor, delta: Tensor, index: Tensor) -> Tensor:
        own = delta[y[index]] if self.classwise else delta[index]
        return (x[index] + own).clamp(0, 1)

    def _minimise(self, model: nn.Module, x: Tensor, y: Tensor, delta: Tensor, report: RoundsProgress) -> None:
        """``settings.steps`` signed descent steps on Δ (in place), projected onto the ε-ball; each
        batch ticks ``report``."""
        step = self.settings.step_size * self.radius
        for _ in range(self.settings.steps):
            total = torch.zeros_like(delta) if self.classwise else None
            for index in self._batches(x):
                own = (delta[y[index]] if self.classwise else delta[index]).clone().requires_grad_(True)
                loss = F.cross_entropy(model((x[index] + own).clamp(0, 1)), y[index], reduction="sum")
                (grad,) = torch.autograd.grad(loss, own)
                if self.classwise:
                    total.index_add_(0, y[index], grad)
                else:
                    delta[index] = (delta[index] - step * grad.sign()).clamp(-self.radius, self.radius)
                report.tick()
            if self.classwise:
                delta.sub_(step * total.sign()).clamp_(-self.radius, self.radius)
        if not self.classwise:
            delta.copy_(self.project(x, delta))

    @torch.no_grad()
    def _accuracy(self, model: nn.Module, x: Tensor, y: Tensor, delta: Tensor, report: RoundsProgress) -> float:
        """The stopping test: the fraction of x + Δ the model classifies correctly (each batch ticks ``report``)."""
        correct = 0
        for index in self._batches(x):
            correct += int((model(self._perturbed(x, y, delta, index)).argmax(1) == y[index]).sum())
            report.tick()
        return correct / len(x)


class ClasswiseErrorMinimizing(ErrorMinimizing):
    """:class:`ErrorMinimizing` with one Δ per class (``error-minimizing-classwise``)."""

    name = "error-minimizing-classwise"

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, **kwargs: object) -> None:
        super().__init__(model, settings, classwise=True, **kwargs)
