"""What every recipe's ``Brain`` shares when it fine-tunes a speech SSL backbone under a strategy.

``BackboneFineTuning`` (an ``sb.Brain``) gives: separate optimizers for the backbone's trainable
tensors (its weights, or S3-Router's mask scores) and for the head, both checkpointed; the
backbone held fixed for the first ``ssl_frozen_steps`` updates while a new head learns; the
training-loop hooks of the run's strategies (``hparams.strategies``, ``s3brain.strategies``:
``on_step`` after every update, ``before_eval`` and ``stage_start`` before each evaluation,
``stage_stats`` after it, ``at_target`` for checkpoint ranking); the training clock
(``hparams.run_state``). A recipe's Brain adds its forward, loss and metrics.
"""

import speechbrain as sb


class BackboneFineTuning(sb.Brain):
    """Backbone + head fine-tuning; subclasses define ``compute_forward``/``compute_objectives``."""

    def head_parameters(self):
        """The tensors the head optimizer trains: the yaml's ``model`` and the trainable tensors
        of the strategies' extra modules (adapters)."""
        from s3brain.strategies import strategy_modules

        params = list(self.hparams.model.parameters())
        seen = {id(p) for p in params}
        for module in strategy_modules(self.strategies).values():
            params += [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in module.parameters())
        return params

    def ssl_frozen(self):
        """Whether the backbone is still held fixed (the first ``ssl_frozen_steps`` updates)."""
        return self.optimizer_step < self.hparams.ssl_frozen_steps

    def freeze_optimizers(self, optimizers):
        """Leave the backbone's optimizer out while the backbone is held fixed."""
        if self.ssl_frozen():
            return {k: v for k, v in optimizers.items() if k != "ssl_optimizer"}
        return optimizers

    def init_optimizers(self):
        """Separate optimizers for the backbone's trainable tensors (weights, or mask scores) and
        the head, both checkpointed."""
        self.model_optimizer = self.hparams.model_opt_class(self.head_parameters())
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        ssl_params = [p for p in self.modules.ssl.parameters() if p.requires_grad]
        if ssl_params:
            self.ssl_optimizer = self.hparams.ssl_opt_class(ssl_params)
            self.optimizers_dict["ssl_optimizer"] = self.ssl_optimizer
        if self.checkpointer is not None:
            for name, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, opt)

    @property
    def strategies(self):
        """The run's strategies (``s3brain.strategies.Strategy`` objects), in yaml order."""
        return list(getattr(self.hparams, "strategies", None) or [])

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

    def strategies_at_target(self):
        """Whether every strategy is final (e.g. at its target sparsity) at this step; a
        checkpoint taken before ranks after all those taken after."""
        return all(s.at_target(self.optimizer_step) for s in self.strategies)

    def on_fit_start(self):
        """Start the training clock (``hparams.run_state``) as well."""
        super().on_fit_start()
        self.hparams.run_state.start_timer()

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
        """NewBob steps of both learning rates on the validation loss; the old rates (for the
        log)."""
        old_lr, new_lr = self.hparams.lr_annealing_model(stats["loss"])
        sb.nnet.schedulers.update_learning_rate(self.model_optimizer, new_lr)
        lrs = {"lr_model": old_lr}
        if hasattr(self, "ssl_optimizer"):
            old_lr_ssl, new_lr_ssl = self.hparams.lr_annealing_ssl(stats["loss"])
            sb.nnet.schedulers.update_learning_rate(self.ssl_optimizer, new_lr_ssl)
            lrs["lr_ssl"] = old_lr_ssl
        return lrs
