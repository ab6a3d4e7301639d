"""A sampler whose draws for trial ``n`` depend on ``(seed, n)`` only, not on process history.

A plain ``RandomSampler(seed)`` replays its sequence from the start in every new process: a
study resumed after ``kill -9`` would re-run the values it has already tried, and two workers
sharing a study would run the same values side by side. Here each trial gets a new sampler
seeded from the seed and the trial's number (unique within a study), so a resumed study or a
second worker draws new values, and a fresh study with the same seed repeats exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededSampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a study seeded with ``seed``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates each trial to ``make(trial_seed(seed, trial.number))``.

    Meant for stateless samplers (random, TPE: what they know comes from the study's trials);
    one trial at a time per process (``n_jobs=1``), as ``run_study`` runs them.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # the seed is the point; nothing to reseed
        pass
