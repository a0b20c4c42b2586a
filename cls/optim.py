"""Optimiser (timm `create_optimizer_v2`) and learning-rate schedule (timm schedulers or torch OneCycleLR)."""
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.optim.lr_scheduler import OneCycleLR


def build_optimizer(model, args):
    """Optimiser over `model` (unwrapped); by default norms, biases and model.no_weight_decay() are not decayed."""
    extra = {}
    if args.opt_eps is not None:
        extra["eps"] = args.opt_eps
    if args.opt_betas is not None:
        extra["betas"] = tuple(args.opt_betas)
    return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                               momentum=args.momentum, filter_bias_and_bn=not args.decay_all, **extra)


class LRSchedule:
    """One interface over timm's schedulers (per epoch or per update) and torch's OneCycleLR (per update).

    `num_epochs` is the length of the run (timm adds cooldown and, with warmup_prefix, the warmup).
    """

    def __init__(self, optimizer, args, updates_per_epoch):
        self.optimizer = optimizer
        if args.sched == "onecycle":
            self.impl = OneCycleLR(
                optimizer, max_lr=args.lr, total_steps=args.epochs * updates_per_epoch, pct_start=args.onecycle_pct,
                anneal_strategy="cos", div_factor=args.onecycle_div, final_div_factor=args.onecycle_final_div,
                cycle_momentum=True, max_momentum=args.onecycle_moms[0], base_momentum=args.onecycle_moms[1])
            self.per_update, self.timm, self.num_epochs = True, False, args.epochs
        else:
            self.impl, self.num_epochs = create_scheduler_v2(
                optimizer, sched=args.sched, num_epochs=args.epochs, cooldown_epochs=args.cooldown_epochs,
                min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
                warmup_prefix=args.warmup_prefix, decay_epochs=args.decay_epochs,
                decay_milestones=args.decay_milestones, decay_rate=args.decay_rate,
                step_on_epochs=not args.sched_on_updates, updates_per_epoch=updates_per_epoch)
            self.per_update, self.timm = args.sched_on_updates, True

    @property
    def lr(self):
        """Current learning rate of the first parameter group."""
        return self.optimizer.param_groups[0]["lr"]

    def start(self, epoch, num_updates):
        """Set the LR for the first epoch of this run (`epoch` > 0 after a resume, after `num_updates` steps)."""
        if self.timm and self.per_update:
            self.impl.step_update(num_updates)
        elif self.timm:
            self.impl.step(epoch)

    def after_update(self, num_updates):
        """Call after every optimiser step; `num_updates` counts steps since the start of training."""
        if not self.per_update:
            return
        if self.timm:
            self.impl.step_update(num_updates)
        else:
            self.impl.step()

    def after_epoch(self, epoch, metric=None):
        """Call when `epoch` is finished (sets the LR of epoch + 1)."""
        if self.timm:
            self.impl.step(epoch + 1, metric)

    def state_dict(self):
        return self.impl.state_dict()

    def load_state_dict(self, state):
        self.impl.load_state_dict(state)
