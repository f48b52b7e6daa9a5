"""ResNet-50's weights: torchvision's IMAGENET1K_V1 from the hub cache (else a download), a state-dict file
the user names, or random weights for plumbing tests; each checked key by key, with one paragraph saying
how to provide them when they cannot be had."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from malle.descriptors.base import Unavailable, WeightsStatus, WeightsUnavailable, weights_identity

if TYPE_CHECKING:
    import torch

RANDOM_WEIGHTS = "random"
ENV_RESNET50_WEIGHTS = "MALLE_RESNET50_WEIGHTS"
# torchvision's ResNet50_Weights.IMAGENET1K_V1.url, written out so that finding the cached file imports no
# torchvision (seconds, in the dashboard's process); tests/test_descriptors.py checks it against torchvision's.
RESNET50_IMAGENET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
RESNET50_IMAGENET = "ResNet50_Weights.IMAGENET1K_V1"  # str() of torchvision's enum member: part of cache keys
# An offline machine must fail within seconds, not wait on the OS TCP timeout.
DOWNLOAD_SOCKET_TIMEOUT_S = 15
# Listing every bad key of a wrong architecture would bury the message.
MAX_KEYS_IN_MESSAGE = 5
# A default run without the ImageNet weights leaves ResNet-50 out with one line (``resnet50_notice``); the whole
# paragraph (``resnet50_help``) is the error of a run that asks for the method.
RESNET50_MISSING = "no ImageNet weights in torch's hub cache"
RESNET50_FIX = (f"Give --resnet50-weights PATH (or ${ENV_RESNET50_WEIGHTS}), or run once online with "
                "--methods resnet50 to cache them.")


def resnet50_label(weights: str | Path | None) -> str:
    if weights is None:
        return "ResNet-50 (ImageNet IMAGENET1K_V1, 2048-d)"
    if weights == RANDOM_WEIGHTS:
        return "ResNet-50 (RANDOM weights, plumbing only)"
    return f"ResNet-50 (state dict {Path(weights).name}, 2048-d)"


def resnet50_source(weights: str | Path | None) -> str:
    if weights is None:
        return "torchvision ResNet50_Weights.IMAGENET1K_V1 (hub cache, else a download)"
    if weights == RANDOM_WEIGHTS:
        return "RANDOM initialisation (plumbing only)"
    return f"state dict file {weights}"


def resnet50_hub_checkpoint() -> Path:
    """Where torchvision caches IMAGENET1K_V1 (follows TORCH_HOME / torch.hub.set_dir)."""
    filename = Path(urlparse(RESNET50_IMAGENET_URL).path).name
    return torch_hub_dir() / "checkpoints" / filename


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()``: once PyTorch is imported, its own answer (a ``set_dir`` call counts); before, the
    same rule from the environment (``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub``), so that a status check imports no PyTorch."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    cache_home = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache_home, "torch")))) / "hub"


def resnet50_notice() -> str:
    """The one line a default run (the CLI's and the dashboard's) shows when it leaves ResNet-50 out because
    torchvision's ImageNet weights are not on this machine."""
    return Unavailable("resnet50", "ResNet-50", RESNET50_MISSING, RESNET50_FIX).notice()


def resnet50_help(problem: str) -> str:
    """One paragraph: what went wrong and every way to provide the weights."""
    return f"ResNet-50 weights unavailable: {problem}. {resnet50_how_to()}"


def resnet50_how_to() -> str:
    hub = resnet50_hub_checkpoint()
    return (
        f"To provide them, either connect to the internet once and run with `--methods resnet50` (torchvision "
        f"then caches IMAGENET1K_V1 at {hub}), or copy {hub.name} from a machine that has it to {hub}, or pass "
        "`--resnet50-weights PATH` pointing at a ResNet-50 state dict (dashboard: `streamlit run streamlit_app.py "
        f"-- --resnet50-weights PATH`; the environment variable {ENV_RESNET50_WEIGHTS}=PATH works for both). "
        "Meanwhile EfficientNet-Lite2 (`--methods efficientnet_lite2`) works offline: its ImageNet weights ship "
        "inside its pip package."
    )


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise WeightsUnavailable(resnet50_help(f"weights file {path} does not exist"))
    return path


def load_resnet50_state(weights: Path | None) -> dict[str, torch.Tensor]:
    state = load_torchvision_imagenet() if weights is None else load_state_file(require_file(weights))
    # DataParallel checkpoints prefix every key; the fc head is replaced anyway.
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def load_torchvision_imagenet() -> dict[str, torch.Tensor]:
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        # torch.hub announces downloads on stdout; keep stdout for the program's own output.
        with contextlib.redirect_stdout(sys.stderr):
            import torchvision

            return torchvision.models.ResNet50_Weights.IMAGENET1K_V1.get_state_dict(
                progress=False, map_location="cpu", weights_only=True, check_hash=True
            )
    except Exception as err:  # network, hash or unpickling errors all mean "not available"
        problem = f"torchvision's IMAGENET1K_V1 is not cached and could not be downloaded ({type(err).__name__}: {err})"
        raise WeightsUnavailable(resnet50_help(problem)) from err
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or non-tensor content
        raise WeightsUnavailable(resnet50_help(f"{path} is not a loadable state dict ({err})")) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsUnavailable(resnet50_help(f"{path} does not hold a state dict of tensors"))
    return loaded


def check_resnet50_keys(state: dict, expected: dict, source: str) -> None:
    """Every non-fc key must be present with the right shape; nothing foreign allowed."""
    # BatchNorm's num_batches_tracked is unused in eval and absent from old checkpoints.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {list(state[k].shape)} != {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        describe_keys("missing keys", missing),
        describe_keys("unexpected keys", unexpected),
        describe_keys("shape mismatches", wrong_shape),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise WeightsUnavailable(resnet50_help(f"{source} is not a ResNet-50 state dict ({'; '.join(problems)})"))


def describe_keys(what: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:MAX_KEYS_IN_MESSAGE])
    more = f" and {len(keys) - MAX_KEYS_IN_MESSAGE} more" if len(keys) > MAX_KEYS_IN_MESSAGE else ""
    return f"{len(keys)} {what}: {shown}{more}"


def resnet50_status(weights: str | Path | None) -> WeightsStatus:
    """On disk now or not, without touching the network."""
    if weights == RANDOM_WEIGHTS:
        return WeightsStatus(True, "random weights (plumbing only)")
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return WeightsStatus(True, f"state dict {path}")
        return WeightsStatus(False, f"weights file {path} does not exist", resnet50_how_to())
    hub = resnet50_hub_checkpoint()
    if hub.is_file():
        return WeightsStatus(True, f"torchvision cache {hub}")
    return WeightsStatus(False, RESNET50_MISSING, RESNET50_FIX)


def build_resnet50(weights: str | Path | None) -> torch.nn.Module:
    """torchvision's ResNet-50 with the fc layer removed (2048-d pooled features), its weights checked."""
    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()  # keep the pooled 2048-d features
    if weights == RANDOM_WEIGHTS:
        return model
    state = load_resnet50_state(None if weights is None else Path(weights))
    check_resnet50_keys(state, model.state_dict(), source=str(weights or RESNET50_IMAGENET))
    model.load_state_dict(state, strict=False)  # keys checked above; old files lack num_batches_tracked
    return model


def resnet50_identity(weights: str | Path | None, memo: Path | None) -> str:
    """What distinguishes these weights, for cache keys: a file's digest is remembered in ``memo``."""
    if weights is None:
        return f"torchvision:{RESNET50_IMAGENET}"
    if weights == RANDOM_WEIGHTS:
        return RANDOM_WEIGHTS
    return weights_identity(require_file(Path(weights)), memo)
