"""Contractions: matmul (`@`) and einsum.

A contraction is a broadcast multiply followed by a sum over the shared axes; the compiler
recognises that pattern and gives it a tiled kernel. Half-precision inputs accumulate in
float32 and round once at the end; integer inputs keep their dtype, as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anychip import dtypes
from anychip.errors import DTypeError, ShapeError, describe
from anychip.frontend import views

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

HALF = (dtypes.float16, dtypes.bfloat16)


def contract(a: Tensor, b: Tensor, axis: int | tuple[int, ...]) -> Tensor:
    """sum(a * b, axis) for a and b of one shape and dtype, accumulating halves in float32
    (integers sum in their own dtype: int32 @ int32 is int32, as in PyTorch)."""
    if a.dtype in HALF:
        out_dtype = a.dtype
        a, b = a.to(dtypes.float32), b.to(dtypes.float32)
        return (a * b).sum(axis).to(out_dtype)
    return (a * b).sum(axis, dtype=a.dtype)


class LinalgMixin:
    __slots__ = ()

    def matmul(self: Tensor, other: Tensor) -> Tensor:
        """Matrix product with numpy/PyTorch semantics: 1-d operands are promoted to
        matrices and back, leading (batch) dimensions broadcast.

        >>> import anychip as ac
        >>> (ac.ones(2, 3) @ ac.ones(3)).tolist()
        [3.0, 3.0]
        """

        other = _tensor.to_tensor(other, like=self)
        if self.ndim == 0 or other.ndim == 0:
            raise ShapeError(
                f"matmul: both arguments need at least 1 dimension, got {describe(self, other)}"
            )
        if self.dtype is not other.dtype:
            raise DTypeError(
                f"matmul: expected both operands to have the same dtype, got "
                f"{describe(self, other)}"
            )
        if self.dtype is dtypes.bool_:
            raise DTypeError(f"matmul: not implemented for bool, got {describe(self, other)}")
        # internal reshapes, not views (`_reshape`): the product is a value of its own
        a = self._reshape((1, *self.shape)) if self.ndim == 1 else self
        b = other._reshape((*other.shape, 1)) if other.ndim == 1 else other
        if a.shape[-1] != b.shape[-2]:
            raise ShapeError(
                f"matmul: shapes cannot be multiplied ({a.shape[-2]}x{a.shape[-1]}"
                f" and {b.shape[-2]}x{b.shape[-1]}): {describe(self, other)}"
            )
        batch = _batch_shape(self, other, a.shape[:-2], b.shape[:-2])
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        full = (*batch, m, k, n)
        a = a._reshape((*a.shape, 1))._broadcast(full)  # (*batch, m, k, 1) -> full
        b = b._reshape((*b.shape[:-2], 1, k, n))._broadcast(full)  # (*batch, 1, k, n) -> full
        out = contract(a, b, -2)  # (*batch, m, n)
        if self.ndim == 1:  # the promoted axes go again
            out = out._reshape((*out.shape[:-2], n))
        if other.ndim == 1:
            out = out._reshape(out.shape[:-1])
        return out

    def __matmul__(self: Tensor, other: Any) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self: Tensor, other: Any) -> Tensor:
        from anychip.frontend.tensor import to_tensor

        return to_tensor(other, like=self).matmul(self)

    def mm(self: Tensor, other: Tensor) -> Tensor:
        if self.ndim != 2 or other.ndim != 2:
            raise ShapeError(f"mm: expects 2-d tensors, got {describe(self, other)}")
        return self.matmul(other)

    def bmm(self: Tensor, other: Tensor) -> Tensor:
        if self.ndim != 3 or other.ndim != 3 or self.shape[0] != other.shape[0]:
            raise ShapeError(
                f"bmm: expects 3-d tensors with equal batch, got {describe(self, other)}"
            )
        return self.matmul(other)

    def dot(self: Tensor, other: Tensor) -> Tensor:
        if self.ndim != 1 or other.ndim != 1 or self.shape != other.shape:
            raise ShapeError(
                f"dot: expects two 1-d tensors of equal size, got {describe(self, other)}"
            )
        return self.matmul(other)


def _batch_shape(x: Tensor, y: Tensor, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcast of matmul's batch dimensions `a` and `b` (of operands x and y)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(p != q and 1 not in (p, q) for p, q in zip(a, b, strict=True)):
        raise ShapeError(
            f"matmul: batch dimensions {a} and {b} cannot be broadcast together: {describe(x, y)}"
        )
    return tuple(max(p, q) if 0 not in (p, q) else 0 for p, q in zip(a, b, strict=True))


# --- einsum ---------------------------------------------------------------------------
# A label is one subscript letter, or ELLIPSIS_LABEL + k for the k-th dimension that `...`
# stands for (k counts over the broadcast ellipsis, left to right).
ELLIPSIS_LABEL = "\x00"
Labels = list[str]


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation, as `torch.einsum`: `'ij,jk->ik'` is a matmul, `'ii->'` a trace,
    `'i,j->ij'` an outer product, `'b...ij,b...jk'` a batched matmul. Without `->` the output
    holds the ellipsis dimensions, then every letter used once, in alphabetical order.
    Labels missing from the output are summed; more than two operands contract pairwise
    from the left.

    >>> import anychip as ac
    >>> a = ac.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> ac.einsum("ij,jk->ik", a, a).tolist()
    [[7.0, 10.0], [15.0, 22.0]]
    >>> ac.einsum("ii", a).item()
    5.0
    """
    from anychip.frontend.tensor import to_tensor

    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ts = [to_tensor(o) for o in operands]
    if not ts:
        raise ShapeError(f"einsum: {equation!r} needs at least one operand")
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ts):
        raise ShapeError(
            f"einsum: {equation!r} names {len(terms)} operands but {len(ts)} were given "
            f"({describe(*ts)})"
        )
    ins = _input_labels(equation, terms, ts)
    out = _output_labels(equation, rhs, ins, ts) if arrow else _implicit_output(ins)
    dt = dtypes.result_type(*ts)
    if dt is dtypes.bool_:
        raise DTypeError(f"einsum: not implemented for bool, got {describe(*ts)}")
    sizes = _label_sizes(equation, ins, ts)
    ops = [_diagonals(t.to(dt), lab, equation) for t, lab in zip(ts, ins, strict=True)]
    ops = [_sum_unused(t, lab, i, ops, out) for i, (t, lab) in enumerate(ops)]
    acc, acc_labels = ops[0]
    for k in range(1, len(ops)):
        later = set(out).union(*(lab for _, lab in ops[k + 1 :]))
        acc, acc_labels = _contract_pair((acc, acc_labels), ops[k], later, out, sizes)
    order = tuple(acc_labels.index(lab) for lab in out)
    if order:
        return acc.permute(order)
    # '->' of a 0-d operand: a new node all the same, so autograd sees an op
    return views.fresh(acc) if any(acc is t for t in ts) else acc


def _parse_term(equation: str, term: str) -> tuple[Labels, Labels | None]:
    """'ab...c' -> (['a', 'b'], ['c']); no ellipsis -> (letters, None)."""
    head, dots, tail = term.partition("...")
    for ch in head + tail:
        if not ch.isalpha() or not ch.isascii():
            raise ShapeError(
                f"einsum: {equation!r}: subscripts must be letters or '...', got {ch!r}"
            )
    return list(head), (list(tail) if dots else None)


def _input_labels(equation: str, terms: list[str], ts: list[Tensor]) -> list[Labels]:
    parsed = [_parse_term(equation, term) for term in terms]
    widths = []
    for i, ((head, tail), t) in enumerate(zip(parsed, ts, strict=True)):
        named = len(head) + len(tail or [])
        if (tail is None and named != t.ndim) or named > t.ndim:
            raise ShapeError(
                f"einsum: {equation!r}: operand {i} has {t.ndim} dimensions but its "
                f"subscripts {terms[i]!r} name {named} ({describe(t)})"
            )
        widths.append(t.ndim - named)
    n_ell = max(widths)
    labels = []
    for (head, tail), w in zip(parsed, widths, strict=True):
        ell = [ELLIPSIS_LABEL + str(k) for k in range(n_ell - w, n_ell)]
        labels.append(head + ell + (tail or []))
    return labels


def _ellipsis_labels(ins: list[Labels]) -> Labels:
    found = {lab for labs in ins for lab in labs if lab.startswith(ELLIPSIS_LABEL)}
    return sorted(found, key=lambda lab: int(lab[1:]))


def _implicit_output(ins: list[Labels]) -> Labels:
    letters = [lab for labs in ins for lab in labs if not lab.startswith(ELLIPSIS_LABEL)]
    return _ellipsis_labels(ins) + sorted(c for c in set(letters) if letters.count(c) == 1)


def _output_labels(equation: str, rhs: str, ins: list[Labels], ts: list[Tensor]) -> Labels:
    head, tail = _parse_term(equation, rhs)
    out = head + (_ellipsis_labels(ins) + tail if tail is not None else [])
    known = {lab for labs in ins for lab in labs}
    for lab in head + (tail or []):
        if lab not in known:
            raise ShapeError(
                f"einsum: {equation!r}: output subscript {lab!r} does not appear in any "
                f"input ({describe(*ts)})"
            )
        if out.count(lab) > 1:
            raise ShapeError(
                f"einsum: {equation!r}: output subscript {lab!r} appears twice ({describe(*ts)})"
            )
    return out


def _label_sizes(equation: str, ins: list[Labels], ts: list[Tensor]) -> dict[str, int]:
    """Each label's size; size-1 dimensions broadcast, as in torch.einsum."""
    sizes: dict[str, int] = {}
    for i, (labs, t) in enumerate(zip(ins, ts, strict=True)):
        for lab, n in zip(labs, t.shape, strict=True):
            seen = sizes.get(lab, 1)
            if n != seen and 1 not in (n, seen):
                name = "..." if lab.startswith(ELLIPSIS_LABEL) else repr(lab)
                raise ShapeError(
                    f"einsum: {equation!r}: subscript {name} has size {n} in operand {i}, "
                    f"which does not broadcast with size {seen} ({describe(*ts)})"
                )
            sizes[lab] = max(n, seen) if lab in sizes else n
    return sizes


def _diagonals(t: Tensor, labels: Labels, equation: str) -> tuple[Tensor, Labels]:
    """Take the diagonal over every label repeated within one operand ('ii->i')."""
    labels = list(labels)
    while len(set(labels)) < len(labels):
        lab = next(x for x in labels if labels.count(x) > 1)
        p = labels.index(lab)
        q = labels.index(lab, p + 1)
        if t.shape[p] != t.shape[q]:
            raise ShapeError(
                f"einsum: {equation!r}: subscript {lab!r} is repeated but the sizes "
                f"{t.shape[p]} and {t.shape[q]} differ ({describe(t)})"
            )
        rest = [i for i in range(t.ndim) if i not in (p, q)]
        t = _diagonal_last2(t.permute([*rest, p, q]))
        labels = [labels[i] for i in rest] + [lab]
    return t, labels


def _diagonal_last2(x: Tensor) -> Tensor:
    """(..., n, n) -> (..., n): in the flattened n*n block the diagonal sits every n+1
    elements, so pad it to n*(n+1), view as (n, n+1) and keep column 0."""
    lead, n = x.shape[:-2], x.shape[-1]
    keep = [(0, s) for s in lead]
    flat = x.reshape((*lead, n * n))._pad_zero([(0, 0)] * len(lead) + [(0, n)])
    grid = flat.reshape((*lead, n, n + 1))._shrink([*keep, (0, n), (0, 1)])
    return grid.reshape((*lead, n))


def _sum_unused(
    t: Tensor, labels: Labels, i: int, ops: Sequence[tuple[Tensor, Labels]], out: Labels
) -> tuple[Tensor, Labels]:
    """Sum labels that no other operand and not the output uses (they never meet again)."""
    elsewhere = set(out).union(*(lab for j, (_, lab) in enumerate(ops) if j != i))
    axes = tuple(k for k, lab in enumerate(labels) if lab not in elsewhere)
    if not axes:
        return t, labels
    return t.sum(axes), [lab for k, lab in enumerate(labels) if k not in axes]


def _align(t: Tensor, labels: Labels, full: Labels, shape: tuple[int, ...]) -> Tensor:
    """Permute t's axes into `full`'s order, add size-1 axes for missing labels, broadcast."""
    present = [lab for lab in full if lab in labels]
    t = t.permute(tuple(labels.index(lab) for lab in present)) if t.ndim else t
    t = t.reshape(tuple(t.shape[present.index(lab)] if lab in labels else 1 for lab in full))
    return t._broadcast(shape)


def _contract_pair(
    left: tuple[Tensor, Labels],
    right: tuple[Tensor, Labels],
    later: set[str],
    out: Labels,
    sizes: dict[str, int],
) -> tuple[Tensor, Labels]:
    """Multiply two operands over the union of their labels and sum the labels no later
    operand nor the output needs. Axes: (kept..., contracted...)."""
    union = list(dict.fromkeys(left[1] + right[1]))
    kept = [lab for lab in union if lab in later]
    if set(kept) == set(out):  # the last pair: lay the result out in output order
        kept = list(out)
    gone = [lab for lab in union if lab not in later]
    full = kept + gone
    shape = tuple(sizes[lab] for lab in full)
    a, b = (_align(t, labs, full, shape) for t, labs in (left, right))
    axes = tuple(range(len(kept), len(full)))
    return (contract(a, b, axes) if axes else a * b), kept


# imported last: anychip.frontend.tensor imports this module (directly or not), so the
# module object may be half made here; the functions above read `_tensor.X` when called,
# where a local import would cost about a microsecond a call (hundreds per training step)
from anychip.frontend import tensor as _tensor  # noqa: E402
