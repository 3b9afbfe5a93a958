"""`tune download`: fetch a model folder from the Hugging Face Hub, with a clear error offline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from tuner.errors import TunerError
from tuner.hub import hub_reachable


def download(
    repo_id: str, output_dir: Optional[Path], ignore_patterns: Optional[Sequence[str]], hf_token: Optional[str]
) -> Path:
    """Download ``repo_id`` into ``output_dir`` and return the folder."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise TunerError("tune download needs huggingface_hub", "pip install huggingface_hub") from None
    target = output_dir or Path("/tmp") / repo_id.split("/")[-1]
    if not hub_reachable():
        raise TunerError(
            f"cannot download {repo_id}: the Hugging Face Hub cannot be reached from here (offline, or "
            "HF_HUB_OFFLINE=1)",
            "connect to the network, or copy the model folder here and point checkpointer.checkpoint_dir at it; "
            "offline, the built-in model works: tune run lora_finetune_single_device --config smollm2/135M_lora_cpu",
        )
    try:
        path = snapshot_download(
            repo_id,
            local_dir=str(target),
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
            token=hf_token,
        )
    except GatedRepoError:
        raise TunerError(
            f"{repo_id} is gated", "accept its licence on the Hub and pass --hf-token or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise TunerError(
            f"{repo_id} was not found on the Hugging Face Hub", "check the name; private repos need --hf-token"
        ) from None
    except LocalEntryNotFoundError:
        raise TunerError(
            f"cannot download {repo_id}: the Hugging Face Hub is not reachable (offline or HF_HUB_OFFLINE=1)",
            "connect to the network, or point checkpoint_dir at a local copy of the model",
        ) from None
    except OSError as e:
        raise TunerError(f"cannot download {repo_id}: {e}", "check the network and --output-dir") from None
    return Path(path)
