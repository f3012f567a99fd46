"""Publish an adapter, merged checkpoint, CTranslate2 or GGML export to the Hugging Face Hub with a model card.

The card (`README.md`, training/model_card.py) is rewritten into the directory with the repo id before upload.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..training.model_card import CARD_MARKER, describe, model_card, write_card

__all__ = ["CARD_MARKER", "describe", "model_card", "push"]

def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    try:  # the HTTP client huggingface_hub uses (httpx2 in today's releases, httpx before)
        import httpx2 as client
    except ImportError:
        import httpx as client
    return HfHubHTTPError, OSError, ValueError, client.HTTPError


def push(path: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         commit_message: str | None = None) -> str:
    """Write the model card into `path`, create `repo_id` if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(path)
    write_card(folder, repo_id)
    api = HfApi(token=token)
    message = commit_message or f"Upload {describe(folder)['kind']} with whispertune"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=message,
                                   ignore_patterns=[".*", "**/.*"])
    except _hub_errors() as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot push {folder} to the Hub as {repo_id}: {detail}") from None
    return str(getattr(commit, "commit_url", commit))
