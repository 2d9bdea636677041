"""What every recipe's ``Brain`` shares when it fine-tunes a speech SSL backbone under a strategy.

``BackboneFineTuning`` (an ``sb.Brain``) holds the mechanisms; a recipe's ``train.py`` subclasses
it with its own ``compute_forward``, ``compute_objectives``, ``on_stage_start``,
``on_stage_end`` and ``init_optimizers``, as SpeechBrain's recipes do. What it gives:

- ``backbone_features``: the backbone's features of a batch as the run's strategies compute them
  (``s3brain.strategies.encode``), without gradient while the backbone is held fixed;
- ``init_backbone_optimizers``: separate optimizers for the backbone's trainable tensors (its
  weights, or S3-Router's mask scores) and for the head and the strategies' extra modules, both
  checkpointed; ``freeze_optimizers`` leaves the backbone's out for the first ``ssl_frozen_steps``
  updates;
- the training-loop hooks of the strategies (``hparams.strategies``): ``on_step`` after every
  update, ``before_eval`` and ``stage_start`` before each evaluation (``strategies_before_eval``),
  ``stage_stats`` after it, ``loss`` terms (``strategies_loss``), ``at_target`` for checkpoint
  ranking (``checkpoint_meta``);
- ``anneal``: NewBob on both learning rates;
- the training clock (``hparams.run_state``): ``train_seconds`` once training is over.
"""

import speechbrain as sb
import torch

from s3brain.strategies.base import encode, strategy_modules
from s3brain.utils.checkpoint import share_checkpoint_dir


class BackboneFineTuning(sb.Brain):
    """Backbone + head fine-tuning under the run's strategies; subclasses define the forward,
    the loss and the metrics."""

    train_seconds = None
    ssl_frozen_steps = 0

    @property
    def strategies(self):
        """The run's strategies (``s3brain.strategies.Strategy`` objects), in yaml order."""
        return list(getattr(self.hparams, "strategies", None) or [])

    def ssl_frozen(self):
        """Whether the backbone is still held fixed (the first ``ssl_frozen_steps`` updates, as
        given to ``init_backbone_optimizers``).

        Returns
        -------
        bool
        """
        return self.optimizer_step < self.ssl_frozen_steps

    def backbone_features(self, batch, stage):
        """The backbone's features of ``batch`` as the strategies compute them (a strategy may
        change the forward: token dropping gives new lengths), with no gradient while the
        backbone is held fixed.

        Arguments
        ---------
        batch : PaddedBatch
            A batch with ``sig``, on the device.
        stage : speechbrain.Stage
            The stage.

        Returns
        -------
        tuple
            ``(features, relative lengths)``.
        """
        wavs, wav_lens = batch.sig
        frozen = stage == sb.Stage.TRAIN and self.ssl_frozen()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return encode(self.strategies, self.modules.ssl, wavs, wav_lens, stage)

    def strategies_loss(self, loss, predictions, batch, stage):
        """``loss`` plus the strategies' terms (``Strategy.loss``, e.g. distillation).

        Arguments
        ---------
        loss : torch.Tensor
            The task's loss.
        predictions : object
            What ``compute_forward`` returned.
        batch : PaddedBatch
            The batch.
        stage : speechbrain.Stage
            The stage.

        Returns
        -------
        torch.Tensor
        """
        for strategy in self.strategies:
            extra = strategy.loss(predictions, batch, stage)
            if extra is not None:
                loss = loss + extra
        return loss

    def head_parameters(self):
        """The tensors the head optimizer trains: the yaml's ``model`` and the trainable tensors
        of the strategies' extra modules (adapters).

        Returns
        -------
        list of torch.nn.Parameter
        """
        params = list(self.hparams.model.parameters())
        seen = {id(p) for p in params}
        for module in strategy_modules(self.strategies).values():
            params += [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in module.parameters())
        return params

    def init_backbone_optimizers(self, model_opt_class, ssl_opt_class, ssl_frozen_steps=0):
        """Separate optimizers for the head (and the strategies' modules) and for the backbone's
        trainable tensors (weights, or mask scores), both checkpointed; the backbone's waits for
        ``ssl_frozen_steps`` updates while a new head learns.

        Arguments
        ---------
        model_opt_class : callable
            ``params -> optimizer`` for the head.
        ssl_opt_class : callable
            ``params -> optimizer`` for the backbone (unused when nothing in it trains).
        ssl_frozen_steps : int
            Updates during which the backbone is held fixed.
        """
        self.ssl_frozen_steps = ssl_frozen_steps
        self.model_optimizer = model_opt_class(self.head_parameters())
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        ssl_params = [p for p in self.modules.ssl.parameters() if p.requires_grad]
        if ssl_params:
            self.ssl_optimizer = ssl_opt_class(ssl_params)
            self.optimizers_dict["ssl_optimizer"] = self.ssl_optimizer
        if self.checkpointer is not None:
            for name, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, opt)

    def freeze_optimizers(self, optimizers):
        """Leave the backbone's optimizer out while the backbone is held fixed.

        Arguments
        ---------
        optimizers : dict
            The optimizers by name.

        Returns
        -------
        dict
        """
        if self.ssl_frozen():
            return {k: v for k, v in optimizers.items() if k != "ssl_optimizer"}
        return optimizers

    def strategies_before_eval(self, stage):
        """Before an evaluation pass: each strategy's ``before_eval`` (a pruning schedule
        re-prunes) and ``stage_start`` (statistics reset).

        Arguments
        ---------
        stage : speechbrain.Stage
            The evaluation stage starting.
        """
        for strategy in self.strategies:
            strategy.before_eval(self.modules.ssl)
            strategy.stage_start(stage)

    def strategy_stats(self, stage):
        """The strategies' statistics of the pass that ends (``Strategy.stage_stats``).

        Arguments
        ---------
        stage : speechbrain.Stage
            The stage ending.

        Returns
        -------
        dict
        """
        stats = {}
        for strategy in self.strategies:
            stats.update(strategy.stage_stats(stage))
        return stats

    def checkpoint_meta(self, stats, key):
        """The meta of a validation checkpoint ranked by ``key`` (lower is better). A checkpoint
        taken before every strategy is final (a pruning schedule below its target sparsity)
        ranks after all those taken after, so the evaluated model is always the final one.

        Arguments
        ---------
        stats : dict
            The validation statistics.
        key : str
            The ranking metric (``WER``, ``PER``, ``error``).

        Returns
        -------
        dict
            ``{key: ranked value, "dev_<key>": the value}``.
        """
        early = not all(s.at_target(self.optimizer_step) for s in self.strategies)
        return {key: stats[key] + (1000.0 if early else 0.0), f"dev_{key}": stats[key]}

    def on_fit_start(self):
        """Share the checkpoint folder across DDP processes and start the training clock."""
        share_checkpoint_dir(self.checkpointer)
        super().on_fit_start()
        self.hparams.run_state.start_timer()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Stop the training clock (its total in ``train_seconds``) before the best checkpoint
        is loaded.

        Arguments
        ---------
        max_key : str
            Key of the best checkpoint (higher is better).
        min_key : str
            Key of the best checkpoint (lower is better).
        """
        if self.train_seconds is None and hasattr(self.hparams, "run_state"):
            self.hparams.run_state.stop_timer()
            self.train_seconds = round(self.hparams.run_state.elapsed(), 1)
        super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """After an optimizer step, each strategy's ``on_step`` (a pruning schedule's).

        Arguments
        ---------
        batch : PaddedBatch
            The batch.
        outputs : object
            The forward's outputs.
        loss : torch.Tensor
            The batch's loss.
        should_step : bool
            Whether the optimizers stepped.
        """
        if should_step:
            for strategy in self.strategies:
                strategy.on_step(self.modules.ssl, self.optimizer_step)

    def anneal(self, stats):
        """NewBob steps of both learning rates on the validation loss.

        Arguments
        ---------
        stats : dict
            The validation statistics (``loss``).

        Returns
        -------
        dict
            The old rates, for the log.
        """
        old_lr, new_lr = self.hparams.lr_annealing_model(stats["loss"])
        sb.nnet.schedulers.update_learning_rate(self.model_optimizer, new_lr)
        lrs = {"lr_model": old_lr}
        if hasattr(self, "ssl_optimizer"):
            old_lr_ssl, new_lr_ssl = self.hparams.lr_annealing_ssl(stats["loss"])
            sb.nnet.schedulers.update_learning_rate(self.ssl_optimizer, new_lr_ssl)
            lrs["lr_ssl"] = old_lr_ssl
        return lrs
