#!/usr/bin/env python
"""Write docs/coverage.md: which PyTorch functions, Tensor methods, nn modules, optimizers
and data utilities anychip has, found by looking the names up in anychip itself.

    python scripts/coverage.py                  # rewrite docs/coverage.md
    python scripts/coverage.py --check          # exit 1 if the committed page is stale
    python scripts/coverage.py --refresh-names  # re-read the names from the installed torch

The PyTorch names come from scripts/coverage_names.json (made by --refresh-names), so the
page depends only on anychip's code and that committed list, never on the torch version
a machine happens to have. tests/unit/test_coverage.py fails when the page is stale:
rerun this script after adding ops.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAMES = ROOT / "scripts" / "coverage_names.json"
PAGE = ROOT / "docs" / "coverage.md"

# helpers torch exports that are not API a model would call
_SKIP_F = {"assert_int_or_pair", "boolean_dispatch", "handle_torch_function"}
_EXTRA_TORCH = [  # top-level functions that are not also Tensor methods
    "tensor",
    "as_tensor",
    "from_numpy",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "linspace",
    "logspace",
    "eye",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "manual_seed",
    "seed",
    "initial_seed",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "dstack",
    "meshgrid",
    "einsum",
    "where",
    "save",
    "load",
    "no_grad",
    "enable_grad",
    "inference_mode",
    "set_grad_enabled",
    "is_grad_enabled",
    "is_tensor",
    "set_default_dtype",
    "get_default_dtype",
    "Size",
    "Generator",
    "allclose",
    "isclose",
    "equal",
    "cdist",
    "broadcast_tensors",
    "broadcast_shapes",
    "block_diag",
    "cartesian_prod",
    "compile",
    "promote_types",
    "result_type",
    "can_cast",
    "tensordot",
    "unique_consecutive",
    "bucketize",
    "searchsorted",
    "cumulative_trapezoid",
    "trapezoid",
    "atleast_1d",
    "atleast_2d",
    "atleast_3d",
    "column_stack",
    "row_stack",
    "tril_indices",
    "triu_indices",
    "scalar_tensor",
    "complex",
    "polar",
    "is_floating_point",
    "is_nonzero",
    "numel",
]
_DATA = [
    "Dataset",
    "IterableDataset",
    "TensorDataset",
    "ConcatDataset",
    "Subset",
    "DataLoader",
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "BatchSampler",
    "WeightedRandomSampler",
    "SubsetRandomSampler",
    "random_split",
    "default_collate",
    "get_worker_info",
]
_AUTOGRAD = ["grad", "backward", "Function", "gradcheck", "gradgradcheck", "no_grad",
             "enable_grad", "set_grad_enabled", "inference_mode", "functional"]  # fmt: skip


def refresh_names() -> None:
    """Read the public names from the installed torch into scripts/coverage_names.json."""
    import torch
    import torch.nn.functional as F

    tensor_methods = sorted(n for n in dir(torch.Tensor) if not n.startswith("_"))
    torch_fns = {n for n in dir(torch) if n in tensor_methods and callable(getattr(torch, n))}
    torch_fns |= {n for n in _EXTRA_TORCH if hasattr(torch, n)}
    functional = sorted(
        n
        for n in dir(F)
        if not n.startswith(("_", "has_torch_function"))
        and n not in _SKIP_F
        and _is_torch_function(getattr(F, n))
    )
    modules = sorted(
        n
        for n in dir(torch.nn)
        if inspect.isclass(getattr(torch.nn, n))
        and issubclass(getattr(torch.nn, n), torch.nn.Module)
    )
    optim = sorted(
        n
        for n in dir(torch.optim)
        if inspect.isclass(getattr(torch.optim, n))
        and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
    )
    sched = sorted(
        n
        for n in dir(torch.optim.lr_scheduler)
        if inspect.isclass(getattr(torch.optim.lr_scheduler, n))
        and n.endswith(("LR", "Plateau", "Annealing", "WarmRestarts"))
    )
    names = {
        "torch": sorted(torch_fns),
        "Tensor": tensor_methods,
        "torch.nn.functional": functional,
        "torch.nn": modules,
        "torch.optim": optim,
        "torch.optim.lr_scheduler": sched,
        "torch.utils.data": sorted(_DATA),
        "torch.autograd": sorted(_AUTOGRAD),
    }
    NAMES.write_text(json.dumps(names, indent=1) + "\n")


def _is_torch_function(obj: Any) -> bool:
    """A function torch defines (not a class, module or typing helper it imports)."""
    if inspect.isclass(obj) or inspect.ismodule(obj) or not callable(obj):
        return False
    return str(getattr(obj, "__module__", "") or "").startswith("torch")


def _homes() -> dict[str, Any]:
    """Where each PyTorch namespace's names are looked up in anychip."""
    sys.path.insert(0, str(ROOT / "src"))
    import anychip as ac
    import anychip.utils.data

    return {
        "torch": ac,
        "Tensor": ac.Tensor,
        "torch.nn.functional": ac.nn.functional,
        "torch.nn": ac.nn,
        "torch.optim": ac.optim,
        "torch.optim.lr_scheduler": ac.optim.lr_scheduler,
        "torch.utils.data": anychip.utils.data,
        "torch.autograd": ac.autograd,
    }


def _names(items: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in items) if items else "(none)"


def render() -> str:
    """The coverage page's markdown (deterministic: sorted names, no dates)."""
    names: dict[str, list[str]] = json.loads(NAMES.read_text())
    homes = _homes()
    rows, sections = [], []
    for space, wanted in names.items():
        have = [n for n in wanted if hasattr(homes[space], n)]
        missing = [n for n in wanted if n not in have]
        rows.append(
            f"| `{space}` | {len(have)} | {len(wanted)} | {100 * len(have) // len(wanted)}% |"
        )
        sections += [
            f"## `{space}`",
            "",
            f"Supported ({len(have)}): {_names(have)}",
            "",
            f"Missing ({len(missing)}): {_names(missing)}",
            "",
        ]
    head = [
        "# PyTorch coverage",
        "",
        "Generated by `python scripts/coverage.py` from anychip's code (a name counts when",
        "anychip has it at the same place: `anychip.X`, `Tensor.X`, `anychip.nn.functional.X`,",
        "...), against the PyTorch names in `scripts/coverage_names.json`. Do not edit by hand:",
        "rerun the script after adding ops (`tests/unit/test_coverage.py` checks it is current).",
        "",
        "| namespace | supported | PyTorch names | share |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(head + sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/coverage.md is stale")
    parser.add_argument("--refresh-names", action="store_true", help="re-read names from torch")
    args = parser.parse_args()
    if args.refresh_names:
        refresh_names()
    text = render()
    if args.check:
        if PAGE.read_text() != text:
            print("docs/coverage.md is stale: run python scripts/coverage.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
