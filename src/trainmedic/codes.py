"""The stable vocabulary of trainmedic: problem codes and remedy codes.

These strings are a public contract (JSON output, CI gates, user code). Add codes freely; never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemCode:
    code: str
    title: str
    meaning: str


@dataclass(frozen=True)
class RemedyCode:
    code: str
    title: str
    auto: bool  # True when tm.fit / tm.autofix can apply it without user code
    what_it_does: str


PROBLEMS: dict[str, ProblemCode] = {
    p.code: p
    for p in [
        ProblemCode(
            "overfitting",
            "Overfitting",
            "The model learns the training data too well: validation loss rises while training loss falls, training accuracy far above validation accuracy.",
        ),
        ProblemCode(
            "underfitting",
            "Underfitting",
            "The model cannot fit even the training data: training loss stays high, training accuracy stays low.",
        ),
        ProblemCode(
            "data_imbalance",
            "Data imbalance",
            "Classes contribute unequally, in the data or in the predictions (predictions pile into a few classes).",
        ),
        ProblemCode(
            "train_test_mismatch",
            "Train/test mismatch",
            "The splits are not alike: held-out accuracy above training accuracy, or shifted distributions.",
        ),
        ProblemCode(
            "inefficient_learning",
            "Inefficient learning",
            "Learning is slow, stalled on a plateau, or oscillating.",
        ),
        ProblemCode(
            "bad_initialization",
            "Bad initialization",
            "Initial weights are too small, too large, or symmetric (identical units).",
        ),
        ProblemCode(
            "gradient_masking",
            "Gradient masking",
            "Activations block the gradient: dead ReLU units or saturated sigmoid/tanh units.",
        ),
        ProblemCode(
            "vanishing_gradient",
            "Vanishing gradient",
            "Gradients shrink toward the first layers, which stop learning.",
        ),
        ProblemCode(
            "exploding_gradient",
            "Exploding gradient",
            "Gradients grow very large; the loss spikes or diverges.",
        ),
        ProblemCode("nonfinite", "NaN/Inf", "NaN or Inf appeared in the loss, gradients or weights."),
        ProblemCode("low_accuracy", "Low accuracy", "Accuracy is below the acceptable level."),
        ProblemCode(
            "low_precision",
            "Low precision",
            "Many false positives: precision is at or below the acceptable level.",
        ),
        ProblemCode(
            "low_recall", "Low recall", "Many false negatives: recall is below the acceptable level."
        ),
        ProblemCode("label_noise", "Label noise", "Labels look inconsistent or wrong."),
        ProblemCode(
            "data_leakage",
            "Data leakage",
            "The same (or nearly the same) samples appear in training and held-out splits.",
        ),
        ProblemCode(
            "insufficient_data",
            "Insufficient data",
            "Too little data for the model size or the number of classes.",
        ),
        ProblemCode("mode_collapse", "Mode collapse", "A GAN generator produces little diversity."),
        ProblemCode(
            "discriminator_overpowering",
            "Discriminator overpowering",
            "A GAN discriminator wins too easily; the generator gets no useful gradient.",
        ),
        ProblemCode(
            "low_data_quality", "Low data quality", "Inputs are noisy, constant, non-finite or unnormalized."
        ),
        ProblemCode(
            "training_failed",
            "Training failed",
            "Training stopped with an exception; the run holds only the steps before it.",
        ),
        ProblemCode(
            "internal_error",
            "trainmedic internal error",
            "A probe or writer of trainmedic failed; training went on, but some signals may be missing.",
        ),
        ProblemCode(
            "rank_nonfinite",
            "Non-finite loss on some ranks",
            "Under torch.distributed, the loss of some ranks (not all) became NaN/Inf first: the cause is in their data or their part of the computation.",
        ),
        ProblemCode(
            "rank_divergence",
            "Loss diverging on a rank",
            "Under torch.distributed, one rank's loss is far above the other ranks' (beyond their mini-batch noise): its data shard differs.",
        ),
        ProblemCode(
            "rank_desync",
            "Replicas out of sync",
            "Under DDP, the ranks' copies of the parameters differ: replicas that should be identical drifted apart.",
        ),
        ProblemCode(
            "uneven_rank_data",
            "Uneven data per rank",
            "Under torch.distributed, the ranks trained on different numbers of samples or steps (more than one batch apart).",
        ),
    ]
}

REMEDIES: dict[str, RemedyCode] = {
    r.code: r
    for r in [
        RemedyCode(
            "early_stopping", "Stop early", True, "Stop training when the validation metric stops improving."
        ),
        RemedyCode(
            "restore_best_checkpoint",
            "Restore the best checkpoint",
            True,
            "Go back to the weights of the epoch with the best validation metric.",
        ),
        RemedyCode("add_dropout", "Add or raise dropout", True, "Insert dropout layers or raise their rate."),
        RemedyCode(
            "weight_decay",
            "Add weight decay",
            True,
            "Penalize large weights (L2 regularization / decoupled weight decay).",
        ),
        RemedyCode(
            "data_augmentation",
            "Augment the data",
            True,
            "Add label-preserving noise, flips, crops or mixup to the training data.",
        ),
        RemedyCode(
            "more_data",
            "Collect more data",
            False,
            "Gather or label more samples, especially for the weak classes.",
        ),
        RemedyCode("smaller_model", "Use a smaller model", True, "Reduce width or depth."),
        RemedyCode("larger_model", "Use a larger model", True, "Increase width or depth."),
        RemedyCode("train_longer", "Train longer", True, "Run more epochs."),
        RemedyCode(
            "class_weights", "Weight the classes", True, "Weight the loss by inverse class frequency."
        ),
        RemedyCode(
            "oversample", "Oversample minority classes", True, "Draw minority-class samples more often."
        ),
        RemedyCode(
            "undersample", "Undersample majority classes", True, "Draw majority-class samples less often."
        ),
        RemedyCode(
            "transfer_learning",
            "Use transfer learning",
            False,
            "Start from weights trained on a related task, freeze, then fine-tune.",
        ),
        RemedyCode(
            "lower_learning_rate",
            "Lower the learning rate",
            True,
            "Divide the learning rate (typically by 3 to 10).",
        ),
        RemedyCode(
            "raise_learning_rate",
            "Raise the learning rate",
            True,
            "Multiply the learning rate (typically by 3 to 10).",
        ),
        RemedyCode(
            "lr_schedule",
            "Use a learning-rate schedule",
            True,
            "Warm up, then reduce the learning rate on plateaus.",
        ),
        RemedyCode(
            "add_momentum", "Add momentum", True, "Use SGD with momentum (0.9) or an adaptive optimizer."
        ),
        RemedyCode(
            "gradient_clipping",
            "Clip gradients",
            True,
            "Clip the global gradient norm at a value taken from the run's healthy history.",
        ),
        RemedyCode(
            "non_saturating_activation",
            "Use a non-saturating activation",
            True,
            "Replace ReLU by LeakyReLU/SiLU, sigmoid/tanh by a ReLU-family activation.",
        ),
        RemedyCode(
            "he_init",
            "He initialization",
            True,
            "Re-initialize ReLU-family layers with He (Kaiming) initialization.",
        ),
        RemedyCode(
            "xavier_init",
            "Xavier initialization",
            True,
            "Re-initialize tanh/sigmoid layers with Xavier (Glorot) initialization.",
        ),
        RemedyCode(
            "batch_norm",
            "Add normalization layers",
            True,
            "Insert batch normalization (layer normalization for sequence models).",
        ),
        RemedyCode(
            "fix_labels",
            "Review and fix labels",
            False,
            "Inspect the suspected samples and correct their labels.",
        ),
        RemedyCode(
            "deduplicate_splits",
            "Deduplicate the splits",
            True,
            "Remove samples shared between training and held-out splits.",
        ),
        RemedyCode(
            "normalize_inputs",
            "Normalize the inputs",
            True,
            "Standardize features to zero mean and unit variance.",
        ),
        RemedyCode(
            "change_loss",
            "Change the loss",
            False,
            "Use a loss suited to the task (e.g. focal loss for imbalance).",
        ),
        RemedyCode("switch_optimizer", "Switch optimizer", True, "Use Adam/AdamW instead of plain SGD."),
        RemedyCode(
            "fix_rank_data",
            "Check the rank's data shard",
            False,
            "Inspect the samples the affected rank loads (its sampler, shard file, preprocessing) against the others'.",
        ),
        RemedyCode(
            "sync_replicas",
            "Keep the replicas in sync",
            False,
            "Broadcast the parameters from rank 0 and change them only through the wrapped model and the shared optimizer settings.",
        ),
        RemedyCode(
            "balance_shards",
            "Balance the shards",
            False,
            "Give every rank the same number of samples and steps (DistributedSampler, drop_last, or DDP's Join).",
        ),
    ]
}


def problem(code: str) -> ProblemCode:
    try:
        return PROBLEMS[code]
    except KeyError:
        from .errors import TrainmedicError

        raise TrainmedicError(
            f"unknown problem code {code!r}; known codes: {', '.join(sorted(PROBLEMS))}"
        ) from None


def remedy(code: str) -> RemedyCode:
    try:
        return REMEDIES[code]
    except KeyError:
        from .errors import TrainmedicError

        raise TrainmedicError(
            f"unknown remedy code {code!r}; known codes: {', '.join(sorted(REMEDIES))}"
        ) from None
