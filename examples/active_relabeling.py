"""Active label correction in a cleanlab workflow: record training dynamics, pick the
samples to relabel under a budget with SEI-guided propagation, "ask the annotator"
(here: the true labels), retrain. Runs in seconds on scikit-learn's digits images.

    python examples/active_relabeling.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import sei
from sei.active import KNNGraph
from sei_cleanlab.active import select_for_relabeling

X, y = load_digits(return_X_y=True)
X = StandardScaler().fit_transform(X)
X, X_test, y_true, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
labels, is_mislabeled = sei.symmetric_noise(y_true, 0.4, seed=0)
n, k = len(labels), 10
print(f"{n} training images, {is_mislabeled.sum()} labels wrong (40 % symmetric noise)")

graph = KNNGraph(X, k=10)  # built once, reused every round


def train(labels, epochs=20, seed=0):
    rec = sei.SEIRecorder(n, k)
    clf = SGDClassifier(loss="log_loss", alpha=1e-3, learning_rate="constant", eta0=0.01, random_state=seed)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(n), 10):
            clf.partial_fit(X[batch], labels[batch], classes=np.arange(k))
        rec.update(np.arange(n), clf.predict_proba(X), labels)
        rec.end_epoch()
    return clf, rec


relabelled = np.zeros(n, bool)
for rnd in range(4):
    clf, rec = train(labels, seed=rnd)
    acc = clf.score(X_test, y_test)
    print(f"round {rnd}: {relabelled.sum():4d} relabelled, {np.sum(labels != y_true):4d} wrong left, "
          f"test accuracy {acc:.3f}")
    if rnd == 3:
        break
    # The recorder is the pred_probs_history; exclude samples already fixed.
    picks = select_for_relabeling(labels, rec, budget=100, graph=graph, exclude=relabelled)
    precision = np.mean(labels[picks] != y_true[picks])
    labels[picks] = y_true[picks]  # the annotator's answer
    relabelled[picks] = True
    print(f"         asked for 100 labels, {precision:.0%} of them were wrong")
