"""FiftyOne Model Zoo encoders for :func:`sei_fiftyone.compute_sei`: ``model="zoo:<name>"``.

Any zoo model that produces embeddings (``model.has_embeddings``: CLIP, DINOv2, the torchvision
classifiers, a model of a custom manifest in ``fo.config.model_zoo_manifest_paths``, ...) embeds
the images through FiftyOne's own machinery: ``fiftyone.zoo.load_zoo_model`` (its download,
cache in ``fo.config.model_zoo_dir``, requirement checks and errors) and
``SampleCollection.compute_embeddings``. The run is frozen: the vectors are embedded once and
``sei.train`` fits its head on them (mode ``"frozen"`` recorded, the engine running on the
vectors); ``embeddings_field`` stores them as with any image model.

Offline, a zoo model whose weights are not in the zoo's folder would make FiftyOne try a download
that can hang for minutes: :func:`zoo_problem` asks first (the manifest's download host, probed
by a TCP connection of at most :data:`sei.engine.weights_probe.OFFLINE_PROBE_TIMEOUT_S` seconds)
and the run or the form says so at once.
"""

from __future__ import annotations

import numpy as np

#: ``compute_sei(model="zoo:<name>")``: a FiftyOne zoo model by name.
ZOO_PREFIX = "zoo:"
#: The zoo's tag of the models that produce embeddings (``fiftyone.zoo.list_zoo_models(tags=...)``).
EMBEDDINGS_TAG = "embeddings"


def is_zoo_model(model):
    """Whether ``model`` names a FiftyOne zoo model (``"zoo:<name>"``)."""
    return isinstance(model, str) and model.startswith(ZOO_PREFIX)


def zoo_name(model):
    """``<name>`` of ``"zoo:<name>"``; ValueError for an empty name."""
    name = model[len(ZOO_PREFIX):].strip()
    if not name:
        raise ValueError(f"model={model!r} names no zoo model; use model='zoo:<name>' with a name of "
                         "fiftyone.zoo.list_zoo_models(tags='embeddings')")
    return name


def embedding_models():
    """Names of the zoo's models tagged as producing embeddings, sorted (downloaded ones first)."""
    import fiftyone.zoo as foz

    names = foz.list_zoo_models(tags=EMBEDDINGS_TAG)
    downloaded = set(foz.list_downloaded_zoo_models())
    return sorted(names, key=lambda n: (n not in downloaded, n))


def zoo_problem(name):
    """Why zoo model ``name`` cannot embed images here (a sentence naming the fix), or None.

    Asked without loading anything: an unknown name (FiftyOne's own error), a model not tagged
    ``"embeddings"`` whose class cannot say (checked again when loaded), or weights that are not
    in ``fo.config.model_zoo_dir`` while the manifest's download host does not answer."""
    import fiftyone as fo
    import fiftyone.zoo as foz

    try:
        zoo_model = foz.get_zoo_model(name)
    except ValueError as e:
        return (f"'{name}' is not a FiftyOne zoo model ({e}); choose one of "
                "fiftyone.zoo.list_zoo_models(tags='embeddings')")
    if zoo_model.manager is None or zoo_model.is_in_dir(fo.config.model_zoo_dir):
        return None
    url = _download_url(zoo_model.manager.config)
    if url is None:
        return None  # FiftyOne's own download and its errors
    from sei.engine.weights_probe import reachable

    why = reachable(url)
    if why is None:
        return None
    return (f"The weights of zoo model '{name}' are not in the zoo's folder ({fo.config.model_zoo_dir}) and "
            f"cannot be downloaded here ({why}). Download them where there is a network "
            f"(fiftyone zoo models download {name}) and copy fo.config.model_zoo_dir here, or choose another model")


def _download_url(config):
    url = getattr(config, "url", None)
    if url:
        return url
    if getattr(config, "google_drive_id", None):
        return "https://drive.google.com"
    return None


def load(name):
    """The zoo model ``name``, loaded by ``fiftyone.zoo.load_zoo_model`` (downloaded when needed,
    requirements ensured, FiftyOne's cache).

    Raises:
        ValueError: its weights cannot be had here (:func:`zoo_problem`, before any download is
            tried), or it produces no embeddings
    """
    import fiftyone.zoo as foz

    problem = zoo_problem(name)
    if problem is not None:
        raise ValueError(problem)
    model = foz.load_zoo_model(name)
    if not getattr(model, "has_embeddings", False):
        raise ValueError(f"Zoo model '{name}' produces no embeddings, so SEI has nothing to train on; choose one of "
                         "fiftyone.zoo.list_zoo_models(tags='embeddings')")
    return model


def embed(samples, name, positions, *, batch_size=None):
    """The (M, D) float32 embeddings of the samples at ``positions`` of ``samples``, by zoo model
    ``name`` through ``SampleCollection.compute_embeddings`` (an unreadable image is FiftyOne's
    error)."""
    import fiftyone as fo
    import fiftyone.core.utils as fou

    model = load(name)
    ids = np.asarray(samples.values("id"))[positions].tolist()
    with fou.SetAttributes(fo.config, show_progress_bars=False):
        vectors = samples.select(ids, ordered=True).compute_embeddings(model, batch_size=batch_size,
                                                                       skip_failures=False)
    return np.stack([np.asarray(v, dtype=np.float32).ravel() for v in vectors])
