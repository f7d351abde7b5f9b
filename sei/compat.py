"""cleanlab, imported without losing the caller's warnings.

Importing cleanlab (checked with 2.9.0) runs ``warnings.filterwarnings("ignore")`` at module level
(``cleanlab/datalab/internal/spurious_correlation.py``): every warning of the process is
silenced from then on, ours included (e.g. the fallback a recorder without what the default
score needs announces, :func:`sei.scores.resolve_score`). Every first import of cleanlab in
this project goes through :func:`import_cleanlab`, which restores the filters after it.
"""

from __future__ import annotations

import warnings


def import_cleanlab():
    """The ``cleanlab`` package, imported (once) with the warning filters kept as they were."""
    with warnings.catch_warnings():  # restores warnings.filters on exit
        import cleanlab
        import cleanlab.filter  # noqa: F401  (the submodules the adapters use, imported here too)
        import cleanlab.rank  # noqa: F401
    return cleanlab
