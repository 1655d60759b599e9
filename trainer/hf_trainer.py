"""The HF ``Trainer`` subclass kprep trains with, and its callback.

Kept apart from :mod:`trainer.train` because defining a ``Trainer`` subclass
imports transformers; ``trainer.train`` imports this module only when a run
starts, so ``kprep --help`` and the launcher path stay light.
"""

from __future__ import annotations

from transformers import Trainer, TrainerCallback

from trainer.collator import logits_to_keep_for
from trainer.model import parameter_groups


class KprepTrainer(Trainer):
    """Own parameter groups for the vision tower / projector / embedding learning rates,
    and logits only where the loss needs them (``logits_to_keep_for``).

    ``kprep_config`` is the run's ``TrainConfig`` (it sets the groups' rates).
    """

    def __init__(self, *args, kprep_config, **kwargs):
        self.kprep_config = kprep_config
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" in inputs:
            inputs = {**inputs, "logits_to_keep": logits_to_keep_for(inputs["labels"])}
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = parameter_groups(opt_model, self.kprep_config)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(
                self.args, opt_model
            )
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(
                groups, lr=self.kprep_config.learning_rate, **optimizer_kwargs
            )
        return self.optimizer


class LogLastStep(TrainerCallback):
    """Log the loss at the final step too, so the summary's final_loss is always set."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control
