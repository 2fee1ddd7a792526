"""Progress of long corpus crafting on stderr: its rounds, the model trained alongside, the stopping test.

A corpus method (error-minimizing noise, :class:`~faceguard.attacks.poisons.ErrorMinimizing`)
alternates rounds of training a model and perturbing the whole corpus until that model fits the
perturbed images; on 1,000 CIFAR-10 images a round takes minutes on a CPU. :class:`RoundsProgress`
says what it is doing: a line when it starts and one per round (round k of at least/at most N, the
model's accuracy on the perturbed images against the stopping accuracy, the time left), written
whether or not stderr is a terminal, so logs have them too; and, on a terminal, a rounds bar with
``acc=…`` and a bar of the current round's training, perturbing and testing batches with its ETA.

Commands switch it on for what they call with :func:`showing_progress` (``--quiet`` switches it
off), so the methods need no progress argument threaded through every layer; nothing is printed
when it is off, the default.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm.auto import tqdm

_SHOWN: ContextVar[bool] = ContextVar("faceguard_progress_shown", default=False)


@contextmanager
def showing_progress(shown: bool) -> Iterator[None]:
    """Within the block, corpus methods report their progress iff ``shown``."""
    token = _SHOWN.set(bool(shown))
    try:
        yield
    finally:
        _SHOWN.reset(token)


def progress_shown(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else whether the caller is inside ``showing_progress(True)``."""
    return _SHOWN.get() if explicit is None else bool(explicit)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class RoundsProgress:
    """Progress of one corpus call: rounds ``least``…``most`` (at least, at most), each made of
    ``batches_per_round`` batches (training, perturbing, the stopping test), stopping once the
    accuracy reaches ``stop_accuracy`` after ``least`` rounds. Does nothing unless ``shown``."""

    def __init__(self, name: str, images: int, least: int, most: int, stop_accuracy: float,
                 batches_per_round: int, shown: bool) -> None:
        self.name, self.least, self.most, self.stop_accuracy = name, least, most, stop_accuracy
        self.batches_per_round, self.shown = batches_per_round, shown
        self.start = self.round_start = time.perf_counter()
        self.rounds = tqdm(total=most, desc=f"{name} rounds", unit="round", file=sys.stderr,
                           disable=None if shown else True)  # bars on a terminal only; lines always
        self.batches: tqdm | None = None
        self.done = 0  # rounds finished
        self.say(f"{images} images, {self.span()} rounds of {batches_per_round} batches each "
                 f"(training, perturbing, testing); stops when its model classifies {stop_accuracy:.0%} "
                 "of the perturbed images correctly")

    def span(self) -> str:
        """'N' when the number of rounds is fixed, else 'at most B' or 'at least A, at most B'."""
        if self.least >= self.most:
            return str(self.most)
        return f"at most {self.most}" if self.least <= 1 else f"at least {self.least}, at most {self.most}"

    def say(self, text: str) -> None:
        """One line on stderr (above the bars), only when shown."""
        if self.shown:
            tqdm.write(f"{self.name}: {text}", file=sys.stderr)

    def begin_round(self, number: int) -> None:
        """Open the bar of round ``number``'s batches."""
        self.close_batches()
        self.round_start = time.perf_counter()
        self.batches = tqdm(total=self.batches_per_round, desc=f"round {number}: train", unit="batch",
                            leave=False, file=sys.stderr, disable=None if self.shown else True)

    def phase(self, label: str) -> None:
        """Name what the current round does now (train, perturb, test)."""
        if self.batches is not None:
            self.batches.set_description_str(f"round {self.done + 1}: {label}", refresh=False)

    def tick(self, batches: int = 1) -> None:
        """``batches`` more batches of the current round are done."""
        if self.batches is not None:
            self.batches.update(batches)

    def end_round(self, number: int, accuracy: float, train_loss: float) -> None:
        """Round ``number`` is done: its line (accuracy, time left) and the rounds bar's ``acc``."""
        self.close_batches()
        elapsed = time.perf_counter() - self.start
        self.done = number
        per_round = elapsed / number
        done = number >= self.least and accuracy >= self.stop_accuracy
        if done or number >= self.most:
            left = "done"
        elif number < self.least:
            left = (f"about {_minutes((self.least - number) * per_round)} left"
                    + (f" (at most {_minutes((self.most - number) * per_round)})" if self.most > self.least else ""))
        else:
            left = f"at most about {_minutes((self.most - number) * per_round)} left"
        self.rounds.set_postfix_str(f"acc={accuracy:.3f}", refresh=False)
        self.rounds.update(1)
        self.say(f"round {number} of {self.span()}: accuracy on the perturbed images {accuracy:.3f} "
                 f"(stops at {self.stop_accuracy:.3f}"
                 + (f" from round {self.least}" if self.least > 1 else "")
                 + f"), training loss {train_loss:.3f}, {_minutes(time.perf_counter() - self.round_start)} "
                 f"this round; {left}")

    def close_batches(self) -> None:
        if self.batches is not None:
            self.batches.close()
            self.batches = None

    def close(self) -> None:
        """Close the bars and say how long the whole call took."""
        self.close_batches()
        self.rounds.close()
        self.say(f"finished after {self.done} round(s) in {_minutes(time.perf_counter() - self.start)}")
