"""Installing the ``@sei/fiftyone`` App plugin into ``FIFTYONE_PLUGINS_DIR``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PLUGIN_DIRNAME = "sei-fiftyone"


def plugin_dir() -> Path:
    """The package folder, which is the plugin (it holds ``fiftyone.yml``)."""
    return Path(__file__).resolve().parent


def _plugins_root(plugins_dir=None) -> Path:
    if plugins_dir is None:
        plugins_dir = os.environ.get("FIFTYONE_PLUGINS_DIR")
    if plugins_dir is None:
        import fiftyone as fo

        plugins_dir = fo.config.plugins_dir
    if not plugins_dir:
        raise ValueError(
            "No plugins directory: set FIFTYONE_PLUGINS_DIR (FiftyOne finds plugins only there) "
            "or pass plugins_dir"
        )
    return Path(plugins_dir).expanduser()


def install_plugin(plugins_dir=None, *, copy=False) -> Path:
    """Link (or copy) the plugin into the FiftyOne plugins directory; idempotent.

    Args:
        plugins_dir (None): target directory; default ``FIFTYONE_PLUGINS_DIR`` or
            ``fo.config.plugins_dir``
        copy (False): copy the files instead of a symlink (for read-only installs)

    Returns:
        the path of the installed plugin
    """
    root = _plugins_root(plugins_dir)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / PLUGIN_DIRNAME
    src = plugin_dir()
    if dest.is_symlink() or dest.exists():
        if not copy and dest.is_symlink() and dest.resolve() == src:
            return dest
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        else:
            shutil.rmtree(dest)
    if copy:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dest.symlink_to(src, target_is_directory=True)
    return dest
