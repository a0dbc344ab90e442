"""Training with the paper's recipe (Section 4.1), from one CPU to torchrun.

:func:`train` runs SGD with the paper's defaults for the dataset family
(:data:`~sknet.training.recipe.RECIPES`), on one process or under ``torchrun``, and writes into
``out``:

* ``config.yaml``: the resolved configuration (a valid ``--config`` file);
* ``last.pt``: everything needed to resume exactly (:mod:`sknet.training.checkpoint`);
* ``best.safetensors`` + ``best.json``: the best epoch's weights in the released format
  (:mod:`sknet.models.weights_io`);
* ``metrics.csv`` (one row per epoch) and ``summary.json`` (:mod:`sknet.training.reports`).

Modules by job: :mod:`~sknet.training.recipe` (the defaults), :mod:`~sknet.training.config` (the
one settings dataclass), :mod:`~sknet.training.checkpoint` (resume state),
:mod:`~sknet.training.reports` (files for people), :mod:`~sknet.training.run_lock` and
:mod:`~sknet.training.run_folder` (one run per folder, resume only its own),
:mod:`~sknet.training.signals` (SIGTERM/SIGINT: stop resumably), :mod:`~sknet.training.sync_bn`
(``--sync-bn`` on any device) and :mod:`~sknet.training.loop` (the run).
Evaluation of trained weights is :mod:`sknet.evaluation`.
"""

from sknet.training.config import TrainConfig, load_config_file, lr_at, resolve
from sknet.training.loop import Trainer, TrainingDiverged, train
from sknet.training.recipe import DEFAULT_MODELS, RECIPES, Recipe, milestone_epochs, recipe_for
from sknet.training.signals import RunStopped

__all__ = [
    "DEFAULT_MODELS",
    "RECIPES",
    "Recipe",
    "RunStopped",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "load_config_file",
    "lr_at",
    "milestone_epochs",
    "recipe_for",
    "resolve",
    "train",
]
