"""Resolving a model name, Hugging Face repo id or local path to files on disk."""

from __future__ import annotations

import re
from pathlib import Path

from fastencodec.nn.config import EncodecConfig
from fastencodec.weights.loading import WEIGHT_FILES

ALIASES = {
    "encodec-24khz": "facebook/encodec_24khz",
    "encodec-32khz": "facebook/encodec_32khz",
    "encodec-48khz": "facebook/encodec_48khz",
}
ALIASES.update({name.replace("-", "_"): repo for name, repo in ALIASES.items()})


def resolve(
    name_or_path: str | Path,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    *,
    local: bool = True,
) -> Path:
    """Local directory or file holding the checkpoint.

    A short name (``encodec-24khz``, or ``encodec_24khz`` as ``.ecdc`` headers spell it) always
    means the published model: it is downloaded with ``huggingface_hub`` into its usual cache
    (``cache_dir`` overrides it; ``HF_HUB_OFFLINE=1`` uses the cache only), never read from a
    directory of that name (pass ``./encodec_24khz`` or a ``Path`` for one). With ``local`` (the
    default) any other existing path is used as is, else the name is a Hugging Face repo id. Names
    that come from files rather than from the user (an ``.ecdc`` header's) go with ``local=False``:
    only the short names are accepted then, so a file cannot make a local directory's weights
    decode it.

    Args:
        name_or_path: short name, repo id, or (with ``local``) a checkpoint path.
        cache_dir: Hugging Face cache directory.
        revision: Hugging Face revision.
        local: accept local paths and repo ids (False: published short names only).

    Returns:
        The checkpoint directory or file.

    Raises:
        FileNotFoundError: the name or path resolves to nothing (or, with ``local=False``, is
            not a published model's short name).
    """
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in ALIASES:
        repo_id = ALIASES[text]
    elif not local:
        raise FileNotFoundError(f"{text!r} is not a published model name ({', '.join(ALIASES)})")
    else:
        path = Path(name_or_path).expanduser()
        if text and path.exists():
            return path
        repo_id = text
        if repo_id.count("/") != 1 or text.startswith((".", "/", "~")):
            raise FileNotFoundError(
                f"{name_or_path}: no such file or directory, and not a model name ({', '.join(ALIASES)}) or repo id"
            )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    offline = not hub_reachable()  # no retries against a host that cannot be resolved

    def fetch(filename: str) -> Path:
        path = hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision, local_files_only=offline)
        return Path(path)

    try:
        config = fetch("config.json")
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id}: not in the Hugging Face cache and could not be downloaded (offline or HF_HUB_OFFLINE=1); "
            "pass the path of a local checkpoint instead (--model PATH)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise FileNotFoundError(f"{repo_id}: could not be fetched from the Hugging Face hub: {exc}") from exc
    for weights in WEIGHT_FILES:
        try:
            fetch(weights)
            return config.parent
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
    raise FileNotFoundError(f"{repo_id}: no {' or '.join(WEIGHT_FILES)} in the repo or the local cache")


HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub's host name (``HF_ENDPOINT``'s, if set) resolves.

    Args:
        timeout: seconds to wait for the DNS answer.

    Returns:
        True if it resolved in time.
    """
    import concurrent.futures
    import os
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}")).hostname or HUB_HOST
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        pool.submit(socket.getaddrinfo, host, 443).result(timeout)
        return True
    except (OSError, concurrent.futures.TimeoutError):
        return False
    finally:
        pool.shutdown(wait=False)


PUBLISHED = {repo: repo.split("/", 1)[1] for repo in ALIASES.values()}
"""The published repos and the model names their ``.ecdc`` headers use (Meta's names)."""


def model_name(name_or_path: str | Path, path: Path, config: EncodecConfig) -> str:
    """The name a loaded checkpoint goes by in ``.ecdc`` headers and messages.

    A published model (alias or repo) gets Meta's name (``encodec_24khz``); another Hugging Face
    repo its repo id, also when found in the Hugging Face cache (``models--org--name``); any other
    local checkpoint the name its config gives (Meta ``.th`` files: Meta's name for their tensors).

    Args:
        name_or_path: what the user asked for (as :func:`resolve` took it).
        path: what :func:`resolve` returned.
        config: the loaded checkpoint's config.

    Returns:
        The name, e.g. ``"encodec_24khz"`` or ``"org/model"``.
    """
    if isinstance(name_or_path, str) and name_or_path in ALIASES:
        return PUBLISHED[ALIASES[name_or_path]]
    repo = str(name_or_path)
    if not Path(name_or_path).expanduser().exists() and repo.count("/") == 1:
        return PUBLISHED.get(repo, repo)
    for part in path.resolve().parts:
        if cached := re.fullmatch(r"models--([^/]+?)--(.+)", part):
            repo = f"{cached.group(1)}/{cached.group(2)}"
            return PUBLISHED.get(repo, repo)
    return config.name
