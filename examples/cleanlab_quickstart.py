"""cleanlab-workflow quickstart: record training dynamics, find label issues, compare
with confident learning. Runs in seconds on scikit-learn's bundled digits images.

    python examples/cleanlab_quickstart.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

import sei
from sei_cleanlab import (
    compare_with_confident_learning,
    detection_metrics,
    find_label_issues,
    get_label_quality_scores,
)

X, y_true = load_digits(return_X_y=True)
X = StandardScaler().fit_transform(X)
labels, is_mislabeled = sei.symmetric_noise(y_true, 0.2, seed=0)
n, k = len(labels), 10
print(f"{n} digit images, {is_mislabeled.sum()} labels flipped (20 % symmetric noise)")

# Train a linear classifier epoch by epoch and record its probabilities.
rec = sei.SEIRecorder(n, k)
clf = SGDClassifier(loss="log_loss", alpha=1e-3, learning_rate="constant", eta0=0.01, random_state=0)
rng = np.random.default_rng(0)
for epoch in range(30):
    for batch in np.array_split(rng.permutation(n), 14):
        clf.partial_fit(X[batch], labels[batch], classes=np.arange(k))
    rec.update(np.arange(n), clf.predict_proba(X), labels)
    rec.end_epoch()

ranked = find_label_issues(labels, rec, return_indices_ranked_by="sei")
print(f"SEI flags {len(ranked)} samples; the 10 most suspect: {ranked[:10].tolist()}")

oos = cross_val_predict(SGDClassifier(loss="log_loss", alpha=1e-3, random_state=0), X, labels, cv=5,
                        method="predict_proba")
df = compare_with_confident_learning(labels, rec, oos, true_labels=y_true)
print(df.attrs["metrics"].round(3).to_string())

# With features, the labels of each sample's nearest neighbours add evidence that the
# dynamics alone lack (score "aum_prob_knn"; here the pixels themselves are the features).
for score in ("aum_prob", "aum_prob_knn"):
    mask = find_label_issues(labels, rec, score=score, features=X)
    quality = get_label_quality_scores(labels, rec, method=score, features=X)
    m = detection_metrics(mask, quality, is_mislabeled)
    print(f"{score:>13}: precision {m['precision']:.3f} recall {m['recall']:.3f} F1 {m['f1']:.3f} "
          f"AUROC {m['auroc']:.3f}")
