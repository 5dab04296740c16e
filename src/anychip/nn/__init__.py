"""`anychip.nn`: Modules, layers, activations, losses, initialisers and clipping.

>>> import anychip as ac
>>> net = ac.nn.Sequential(ac.nn.Linear(2, 8), ac.nn.ReLU(), ac.nn.Linear(8, 3))
>>> net(ac.ones(4, 2)).shape
(4, 3)
"""

from __future__ import annotations

from anychip.nn import functional, init, utils
from anychip.nn.activation import (
    ELU,
    GELU,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from anychip.nn.containers import ModuleDict, ModuleList, Sequential
from anychip.nn.layers import (
    Dropout,
    Embedding,
    EmbeddingBag,
    Flatten,
    Identity,
    LayerNorm,
    Linear,
    RMSNorm,
    Unflatten,
)
from anychip.nn.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from anychip.nn.module import IncompatibleKeys, Module, Parameter, StateDictError

__all__ = [
    "ELU",
    "GELU",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "EmbeddingBag",
    "Flatten",
    "HuberLoss",
    "Identity",
    "IncompatibleKeys",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "RMSNorm",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "Softplus",
    "StateDictError",
    "Tanh",
    "Unflatten",
    "functional",
    "init",
    "utils",
]

# PyTorch habits (issue 10): normalisation with running statistics
from anychip.nn.norm import BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm

__all__ += ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm"]

# --- convolution, pooling and attention layers (issue 10) --------------------------------
from anychip.nn.conv import (  # noqa: E402
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)

__all__ += [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]
from anychip.nn.pooling import (  # noqa: E402
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    MaxUnpool1d,
    MaxUnpool2d,
    Upsample,
)

__all__ += [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "Upsample",
]
from anychip.nn.attention import MultiheadAttention, TransformerEncoderLayer  # noqa: E402

__all__ += ["MultiheadAttention", "TransformerEncoderLayer"]
from anychip.nn.activation_extra import (  # noqa: E402
    CELU,
    SELU,
    Fold,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LogSigmoid,
    Mish,
    ReLU6,
    Softmin,
    Softsign,
    Unfold,
)

__all__ += [
    "CELU",
    "SELU",
    "Fold",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "LogSigmoid",
    "Mish",
    "ReLU6",
    "Softmin",
    "Softsign",
    "Unfold",
]

from anychip.nn.transformer import (  # noqa: E402
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
)

__all__ += ["Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder"]
