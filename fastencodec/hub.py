"""Resolving a model name, Hugging Face repo id or local path to files on disk."""

from __future__ import annotations

from pathlib import Path

from fastencodec.weights import WEIGHT_FILES

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
    directory of that name (pass ``./encodec_24khz`` or a ``Path`` for one). With ``local`` (the default)
    any other existing path is used as is, else the name is a Hugging Face repo id. Names that
    come from files rather than from the user (an ``.ecdc`` header's) go with ``local=False``:
    only the short names are accepted then, so a file cannot make a local directory's weights
    decode it.

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

    def fetch(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision))

    try:
        config = fetch("config.json")
    except LocalEntryNotFoundError as exc:
        raise FileNotFoundError(
            f"{repo_id}: not in the Hugging Face cache and could not be downloaded (offline or HF_HUB_OFFLINE=1)"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise FileNotFoundError(f"{repo_id}: could not be fetched from the Hugging Face hub: {exc}") from exc
    for weights in WEIGHT_FILES:
        try:
            fetch(weights)
            return config.parent
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
    raise FileNotFoundError(f"{repo_id}: no {' or '.join(WEIGHT_FILES)} in the repo or the local cache")
