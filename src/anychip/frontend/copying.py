"""copy.deepcopy and pickle of tensors, as PyTorch users rely on them: `copy.deepcopy(model)`
(target networks, EMA weights, the layers of nn.TransformerEncoder), `pickle.dumps(t)`.

A deep copy is a new leaf with its own storage (a realised clone), the same
`requires_grad`, a deep copy of `.grad`, and the same class (a Parameter stays one). As
in torch, only leaves can be deep-copied. Pickling stores the values as a numpy array with
the dtype's name and the device, so it loads in another process with anychip installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from anychip import dtypes
from anychip.errors import AutogradError, describe

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor


def _rebuild(cls: Any, values: np.ndarray, dtype: str, device: str, requires_grad: bool) -> Any:
    from anychip.frontend.tensor import Tensor

    t = Tensor(values, dtype=dtypes.to_dtype(dtype), device=device)
    out = cls.__new__(cls)
    out._init(t)
    out.requires_grad = requires_grad
    return out


class CopyMixin:
    def __deepcopy__(self: Tensor, memo: dict[int, Any]) -> Tensor:
        import copy

        from anychip.frontend.tensor import no_grad

        if not self.is_leaf:
            raise AutogradError(
                "deepcopy: only tensors created explicitly by the user (graph leaves) support "
                f"the deepcopy protocol; detach() it first ({describe(self)})"
            )
        with no_grad():
            values = self.clone()
            values.realize()
        new = type(self).__new__(type(self))
        new._init(values)
        new.requires_grad = self.requires_grad
        memo[id(self)] = new
        if self.grad is not None:
            new.grad = copy.deepcopy(self.grad, memo)
        return new

    def __reduce_ex__(self: Tensor, protocol: Any) -> tuple[Any, ...]:
        if not self.is_leaf and self.requires_grad:
            raise AutogradError(
                f"pickle: can't pickle a non-leaf tensor that requires grad ({describe(self)}); "
                "detach() it first"
            )
        values = self.detach().numpy()
        return (
            _rebuild,
            (type(self), values, self.dtype.name, str(self.device), self.requires_grad),
        )
