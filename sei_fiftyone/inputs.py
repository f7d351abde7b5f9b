"""Reading what an SEI run trains on from a collection: the label field mapped to class
indices, and the images or the vectors of an embeddings field.

Samples without a label are not trained on (and get no score); their positions are
kept so that the run's values line up with ``samples.values("id")``.

The checks of what the App sends are here too, one rule each for every panel callback and
operator: :func:`check_count` for budgets, batch sizes and folds, :func:`check_sample_ids`
for sample ids (a button's ``sample_id``, the queue in the panel's state, the selection).
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass

import numpy as np

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

from sei.process import without_gc

from .runs import EMBEDDINGS_MODEL, dataset_of, field_names


_OBJECT_ID = re.compile(r"[0-9a-f]{24}")


def check_count(value, name="budget", minimum=1):
    """A count typed in the App (a budget, a batch size, folds) as an int.

    A whole number of at least ``minimum``: bools, strings and fractions (``2.5``) are
    refused, as are integral floats (``5.0``) and anything below ``minimum`` (``0``), with
    a ValueError naming ``name``; nothing is rounded or replaced by a default.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def check_sample_ids(samples, ids, what="sample"):
    """``ids`` (a list, or one id) as a list of ids of samples of the collection ``samples``.

    Each must be a sample id as FiftyOne writes it (24 lowercase hexadecimal digits) of a
    sample in ``samples`` (a dataset, or a view such as a run's scored samples; None checks
    the form only); anything else (a forged id, junk in a list, an id of another dataset)
    is refused with a ValueError that names it, before the database is asked anything with it.
    """
    one = isinstance(ids, str)
    if one:
        ids = [ids]
    if not isinstance(ids, (list, tuple)):
        raise ValueError(f"{what} ids must be a list of sample ids, got {type(ids).__name__}")
    junk = [i for i in ids if not isinstance(i, str) or not _OBJECT_ID.fullmatch(i)]
    if junk:
        raise ValueError(f"Not a sample id: {_shown(junk[0])} (a sample id has 24 hexadecimal digits)")
    if samples is None or not ids:
        return list(ids)
    found = set(samples.select(list(set(ids))).values("id"))
    missing = [i for i in ids if i not in found]
    if missing:
        name = getattr(samples, "dataset_name", None) or getattr(samples, "name", "")
        raise ValueError(f"No {what} with id {missing[0]!r} in '{name}'"
                         + (f" ({len(missing)} ids in all)" if len(missing) > 1 else ""))
    return list(ids)


def _shown(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classification_fields(samples):
    """Names of the top-level ``Classification`` fields of a collection."""
    return sorted(samples.get_field_schema(embedded_doc_type=fol.Classification))


def embeddings_fields(samples):
    """Names of top-level vector/array fields that can serve as embeddings."""
    out = []
    for name, field in samples.get_field_schema().items():
        if isinstance(field, (fof.VectorField, fof.ArrayField)):
            out.append(name)
        elif isinstance(field, fof.ListField) and isinstance(field.field, (fof.FloatField, fof.IntField)):
            out.append(name)
    return sorted(out)


def check_label_field(samples, label_field):
    """Refuse a ``label_field`` that is not a ``Classification`` field of the collection."""
    fields = classification_fields(samples)
    if label_field not in fields:
        raise ValueError(
            f"label_field must be a Classification field of the collection; got '{label_field}', "
            f"available: {fields or 'none'}"
        )


def resolve_source(samples, brain_key, *, model, embeddings_field, mode):
    """What the run trains on: returns ``(model, mode)``.

    FiftyOne Brain's convention: an ``embeddings_field`` that does not exist yet is computed
    with ``model`` (frozen) and stored with the run; an existing one is trained on
    (``model="embeddings"``, ``mode="embeddings"``).
    """
    if embeddings_field is not None and embeddings_field not in dataset_of(samples).get_field_schema():
        if model == EMBEDDINGS_MODEL:
            raise ValueError(f"embeddings field '{embeddings_field}' does not exist; pass model=<an image model> "
                             "to compute and store it, or the name of an existing vector field")
        if mode == "finetune":
            raise ValueError("mode='finetune' changes the encoder while training, so its embeddings cannot be "
                             "stored; use mode='frozen' with embeddings_field, or no embeddings_field")
        if embeddings_field in field_names(brain_key):
            raise ValueError(f"embeddings_field '{embeddings_field}' is one of the fields the run "
                             f"'{brain_key}' writes {field_names(brain_key)}; choose another name for it")
        return model, "frozen"
    if embeddings_field is not None:
        model = EMBEDDINGS_MODEL
    if model == EMBEDDINGS_MODEL:
        if embeddings_field is None:
            raise ValueError("model='embeddings' needs embeddings_field=<a vector field>")
        return model, "embeddings"
    return model, mode or "frozen"


def stores_embeddings(config):
    """Whether the run computes its ``embeddings_field`` from the images and stores it."""
    return config.embeddings_field is not None and config.model != EMBEDDINGS_MODEL


@dataclass
class Labels:
    """The label field of a collection as class indices.

    ``ids`` are every sample's id (N), ``positions`` the M samples that have a label,
    ``labels`` their (M,) class indices into ``classes``.
    """

    ids: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    classes: list


@without_gc
def read_labels(samples, label_field, classes=None):
    """The labels of ``label_field``; ``classes`` default to the distinct labels, sorted."""
    ids, names = samples.values(["id", f"{label_field}.label"])
    positions = np.flatnonzero([lab is not None for lab in names])
    present = {names[i] for i in positions}
    classes = sorted(present) if classes is None else list(classes)
    if len(classes) < 2:
        raise ValueError(f"Field '{label_field}' has {len(classes)} class(es) on these samples; SEI needs at least 2")
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted(present - set(index))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} of '{label_field}' are not in classes={classes}")
    labels = np.array([index[names[i]] for i in positions], dtype=np.int64)
    return Labels(np.asarray(ids), positions, labels, classes)


def read_training_inputs(samples, config, positions):
    """The (M, D) float32 vectors of ``config.embeddings_field`` (mode ``"embeddings"``; read
    as :func:`read_vectors` reads them), else the M image paths, of the samples at ``positions``."""
    if config.mode != "embeddings":
        paths = samples.values("filepath")
        return [paths[i] for i in positions]
    raw = samples.values(config.embeddings_field, _raw=True)
    raw = [raw[i] for i in positions]
    missing = sum(1 for v in raw if v is None)
    if missing:
        raise ValueError(f"{missing} sample(s) have no '{config.embeddings_field}' embedding; "
                         "compute it for every sample or restrict the view")
    def slow():
        vecs = samples.values(config.embeddings_field)
        return [vecs[i] for i in positions]

    return _vectors(raw, slow)


def read_vectors(samples, field):
    """The (N, D) float32 vectors of ``field``, or None when a sample has none.

    Vectors stored by FiftyOne as arrays (``fiftyone.core.utils.serialize_numpy_array``: a
    zlib-compressed ``.npy``) are read raw and decoded together when they share one ``.npy``
    header (dtype and shape): about 10x faster than ``values()``, which parses each header
    (20,000 x 64-d: 0.5 s against 4.6 s). Anything else (lists, mixed shapes) goes through
    ``values()``. Memory: the raw values and the (N, D) result.
    """
    raw = samples.values(field, _raw=True)
    if not raw or any(v is None for v in raw):
        return None
    return _vectors(raw, lambda: samples.values(field))


def _vectors(raw, slow):
    """(N, D) float32 from the raw values, decoded together; else from ``slow()``
    (the values as FiftyOne reads them)."""
    fast = _decode_npy_vectors(raw)
    if fast is not None:
        return fast
    return np.stack([np.asarray(v, dtype=np.float32).ravel() for v in slow()])


#: Vectors decoded per step (bounds the decompressed copies held at once).
_DECODE_ROWS = 1 << 16


def _decode_npy_vectors(raw):
    """(N, D) float32 from FiftyOne's serialised arrays sharing one header, else None.
    Decoded in steps of ``_DECODE_ROWS`` into the result."""
    import io
    import zlib

    if not raw or not all(isinstance(v, bytes) for v in raw):
        return None
    try:
        first = zlib.decompress(raw[0])
        head = io.BytesIO(first)
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, fortran, dtype = read_header(head)
    except (zlib.error, ValueError):
        return None
    start = head.tell()
    header = first[:start]
    width = (len(first) - start) // max(dtype.itemsize, 1)
    if fortran or dtype.hasobject:
        return None
    out = np.empty((len(raw), width), dtype=np.float32)  # writable, whatever the stored dtype
    for s in range(0, len(raw), _DECODE_ROWS):
        try:
            payloads = [zlib.decompress(v) for v in raw[s:s + _DECODE_ROWS]]
        except zlib.error:
            return None
        if any(len(p) != len(first) or p[:start] != header for p in payloads):
            return None
        out[s:s + len(payloads)] = np.frombuffer(b"".join(p[start:] for p in payloads), dtype=dtype).reshape(-1, width)
    return out
