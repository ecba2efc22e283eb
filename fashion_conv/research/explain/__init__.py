"""What the layers learned: filters, feature maps, attributions (Captum), equivariance and receptive fields.

A Python API on any backbone ``nn.Module`` and tensors (no files); ``python -m fashion_conv.research.explain`` writes
the report, and ``ExplainFigures`` adds the same pictures to a run's TensorBoard.
"""

from fashion_conv.research.explain.attributions import (
    attribution_maps,
    completeness_gap,
    completeness_rows,
    grad_cam,
    integrated_gradients,
    occlusion,
)
from fashion_conv.research.explain.equivariance import equivariance_errors, relative_error, shift
from fashion_conv.research.explain.filters import first_layer_filters
from fashion_conv.research.explain.layers import (
    LayerInfo,
    block_outputs,
    feature_maps,
    layer_labels,
    most_active_channels,
    spatial_layers,
)
from fashion_conv.research.explain.mistakes import accuracy, confident_errors, confusion_pairs, predict_probs, worst_per_class

__all__ = [
    "LayerInfo", "accuracy", "attribution_maps", "block_outputs", "completeness_gap", "completeness_rows", "confident_errors",
    "confusion_pairs", "equivariance_errors", "feature_maps", "first_layer_filters", "grad_cam", "integrated_gradients",
    "layer_labels", "most_active_channels", "occlusion", "predict_probs", "relative_error", "shift", "spatial_layers",
    "worst_per_class",
]  # fmt: skip
