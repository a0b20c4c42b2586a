"""Training losses: soft-target CE for mixup, label smoothing in the timm/PyTorch or SAN convention."""
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy


class OffTargetSmoothingCrossEntropy(torch.nn.Module):
    """Label smoothing as in SAN's `smooth_loss`: 1-eps on the true class, eps/(K-1) on every other class."""

    def __init__(self, smoothing):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, target):
        log_probs = F.log_softmax(logits.float(), dim=-1)
        classes = logits.shape[-1]
        soft = torch.full_like(log_probs, self.smoothing / (classes - 1))
        soft.scatter_(1, target.unsqueeze(1), 1.0 - self.smoothing)
        return -(soft * log_probs).sum(dim=-1).mean()


def train_criterion(mixup_active, smoothing, exclude_target=False):
    """Loss for training batches (targets are soft when mixup/cutmix produced them)."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    if smoothing and exclude_target:
        return OffTargetSmoothingCrossEntropy(smoothing)
    return torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
