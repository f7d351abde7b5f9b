"""Training backend for :func:`sei_fiftyone.compute_sei`: ``sei.train`` and nothing else.

The adapter adds two things only:

* defaults for an interactive tool: the ``"linear"`` head (softmax regression on frozen,
  standardised features) at lr 0.002 for 10 epochs, which on the bundled CIFAR-10N sample
  finds the human label errors better than the paper's cosine prompt head (README,
  "FiftyOne"); ``head="prompt"`` gives the paper's setup;
* every sample gets a score: ``sei.train`` leaves the samples it relabelled to the
  auxiliary pseudo-class unscored (their own label was never trained), so when the
  threshold needs the auxiliary class a second run without it scores them, and the
  threshold stays the first run's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

EMBEDDINGS_MODEL = "embeddings"
DEFAULT_HEAD = "linear"
DEFAULT_EPOCHS = {"linear": 10, "prompt": 150}
DEFAULT_LR = {"linear": 0.002, "prompt": 1e-3}


def train(inputs, labels, *, class_names, model, mode, epochs=None, threshold="auto", score=None, seed=0,
          on_epoch_end=None, progress=False, batch_size=128, lr=None, head=DEFAULT_HEAD, **kwargs):
    """``sei.train`` with the adapter's defaults; returns its ``TrainResult`` with every
    readable sample scored (see the module docstring).

    ``on_epoch_end(done, total, metrics)`` counts epochs from 1 over both runs, with
    ``metrics`` holding ``train_accuracy`` and ``train_loss``.
    """
    from sei.constants import DEFAULT_SCORE
    from sei.training import train as sei_train

    epochs = DEFAULT_EPOCHS[head] if epochs is None else int(epochs)
    lr = DEFAULT_LR[head] if lr is None else lr
    score = DEFAULT_SCORE if score is None else score
    aux_class = kwargs.pop("aux_class", "auto")
    if aux_class == "auto":
        aux_class = isinstance(threshold, str) and threshold.startswith("aux")
    runs = 2 if aux_class else 1
    common = dict(class_names=class_names, model=model if mode != "embeddings" else None, mode=mode,
                  epochs=epochs, batch_size=batch_size, lr=lr, head=head, score=score, seed=seed,
                  progress=progress, **kwargs)

    def hook(r):
        if on_epoch_end is None:
            return None

        def call(epoch, total, m):
            metrics = {"train_accuracy": m.get("accuracy"), "train_loss": m.get("loss")}
            on_epoch_end(r * total + epoch + 1, runs * total, metrics)
        return call

    first = sei_train(inputs, labels, aux_class=aux_class, threshold=threshold, on_epoch_end=hook(0), **common)
    aux = np.asarray(first.aux_indices, dtype=np.int64)
    if not aux_class or aux.size == 0:
        return first
    # The linear head needs only the features: reuse the first run's (no second embedding
    # pass). The prompt head may start from text-tower prompts, so it gets the images again.
    second_inputs, second = inputs, dict(common)
    if head == "linear" and first.features is not None:
        second_inputs, second["mode"] = first.features, "embeddings"
    second = sei_train(second_inputs, labels, aux_class=False, threshold=first.threshold,
                       on_epoch_end=hook(1), **second)
    scores = np.array(first.scores, dtype=np.float64)
    scores[aux] = second.scores[aux]
    pred_probs = np.array(first.pred_probs, dtype=np.float32)
    pred_probs[aux] = second.pred_probs[aux]
    predicted = np.array(first.predicted_labels, dtype=np.int64)
    predicted[aux] = second.predicted_labels[aux]
    mislabeled = np.isfinite(scores) & (scores < first.threshold)
    return dataclasses.replace(first, scores=scores, mislabeled=mislabeled, pred_probs=pred_probs,
                               predicted_labels=predicted)

