"""Where open_clip would read weights from, whether that host answers, and Hugging Face offline
mode while reading cached weights (used by :func:`sei.models.load_model` to fail fast offline)."""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["OFFLINE_PROBE_TIMEOUT_S", "weights_location", "reachable", "hf_offline"]


#: Seconds to wait for a TCP connection to the weights' host before declaring it unreachable.
OFFLINE_PROBE_TIMEOUT_S = 1.5
_HF_WEIGHTS = "open_clip_pytorch_model.bin"
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
