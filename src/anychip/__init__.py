"""anychip: write a model once, train and serve it on any chip.

>>> import anychip as ac
>>> x = ac.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> y = (x * x).sum()
>>> y.backward()
>>> x.grad.tolist()
[2.0, 4.0, 6.0]
"""

from __future__ import annotations

from anychip import nn, optim
from anychip.checkpoint import load, save
from anychip.dtypes import (
    DType,
    bfloat16,
    bool_,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    promote_types,
    result_type,
    uint8,
    uint32,
    uint64,
)
from anychip.errors import (
    ArgumentError,
    AutogradError,
    CompileError,
    DeviceError,
    DivisionByZeroError,
    DTypeError,
    Error,
    IndexOutOfRange,
    InPlaceError,
    OutOfMemoryError,
    ShapeError,
)
from anychip.frontend import functional as _functional
from anychip.frontend.creation import (
    arange,
    cat,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    stack,
    tensor,
    zeros,
    zeros_like,
)
from anychip.frontend.functional import *  # noqa: F403  (torch-style free functions)
from anychip.frontend.jit import jit
from anychip.frontend.random import (
    manual_seed,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
)
from anychip.frontend.tensor import (
    Tensor,
    enable_grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from anychip.runtime.device import devices, set_default_device
from anychip.runtime.dispatch import JitError
from anychip.serialization import load_file, save_file

bool = bool_  # noqa: A001  (anychip.bool, as torch.bool)
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "AutogradError",
    "CompileError",
    "DType",
    "DTypeError",
    "DeviceError",
    "DivisionByZeroError",
    "Error",
    "InPlaceError",
    "IndexOutOfRange",
    "JitError",
    "OutOfMemoryError",
    "ShapeError",
    "Tensor",
    "arange",
    "bfloat16",
    "bool",
    "bool_",
    "cat",
    "devices",
    "double",
    "empty",
    "empty_like",
    "enable_grad",
    "set_grad_enabled",
    "eye",
    "float",
    "float16",
    "float32",
    "float64",
    "full",
    "full_like",
    "half",
    "int",
    "int8",
    "int16",
    "int32",
    "int64",
    "is_grad_enabled",
    "jit",
    "linspace",
    "load",
    "load_file",
    "long",
    "manual_seed",
    "nn",
    "no_grad",
    "ones",
    "ones_like",
    "optim",
    "promote_types",
    "rand",
    "rand_like",
    "randint",
    "randn",
    "randn_like",
    "randperm",
    "result_type",
    "save",
    "save_file",
    "set_default_device",
    "stack",
    "tensor",
    "uint8",
    "uint32",
    "uint64",
    "zeros",
    "zeros_like",
    *_functional.__all__,
]

# PyTorch habits (issue 10): torch-style free functions, autograd, data loading
from anychip import autograd, utils  # noqa: E402
from anychip.frontend.torch_api import *  # noqa: E402, F403
from anychip.frontend.torch_api import __all__ as _torch_api_all  # noqa: E402

__all__ += ["autograd", "utils", *_torch_api_all]
concat = concatenate = cat  # torch's (and numpy's) other names for cat
__all__ += ["concat", "concatenate"]

# numpy's axis=/keepdims= wherever dim=/keepdim= is taken (frontend/aliases.py)
from anychip.frontend import aliases as _aliases  # noqa: E402

_aliases.install_class(Tensor)
_aliases.install_module(globals())
_aliases.install_module(vars(nn.functional))

# the recommendation engine (issue 13): anychip.rec
from anychip import rec  # noqa: E402

__all__ += ["rec"]

# float32 matmul precision, as torch (issue 12)
from anychip.precision import get_float32_matmul_precision, set_float32_matmul_precision  # noqa: E402

__all__ += ["get_float32_matmul_precision", "set_float32_matmul_precision"]
