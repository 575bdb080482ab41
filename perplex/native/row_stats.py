"""Per-row statistics of logit rows in compiled code (`row_stats.c`), for the logit lens.

The lens needs, for every (layer, position) row of ~50k logits: the top-k, log Z, entropy,
the final token's rank and the cross term of the KL to the final layer. In torch that is
about ten passes over each row through separate kernels; the C code does it in two passes
(top-k, then one fused pass of exp and sums) and is ~2-4 times faster here.

The library is compiled on first use with the machine's C compiler for its own CPU, and kept
under `build/` beside this file (or the temporary folder), named by a hash of the source,
the flags and the CPU, so a changed source or another machine builds afresh. Without a
compiler, or when `PERPLEX_NATIVE=0`, `load()` returns None and callers use torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("row_stats.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11")
BUILD_SECONDS = 120
N_SUMS = 4  # Σ e, Σ e·z, Σ p_final·z, count above the final token (see row_stats.c)


@dataclass(frozen=True)
class RowSums:
    """What the C code returns for rows [R, V] (all numpy arrays)."""

    top_values: np.ndarray  # [R, k] float32: the k largest logits, descending
    top_ids: np.ndarray  # [R, k] int64: their token ids
    sums: np.ndarray  # [R, 4] float64: Σ e, Σ e·z, Σ p_final·z, #{z > z_final}; e = exp(z - max)


def _cpu_signature() -> str:
    """The CPU's model and feature flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def _build_dirs() -> list[Path]:
    return [SOURCE.parent / "build", Path(tempfile.gettempdir()) / "perplex-native"]


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        subprocess.run([compiler, *FLAGS, "-o", str(partial), str(SOURCE), "-lm"], check=True,
                       capture_output=True, text=True, timeout=BUILD_SECONDS)
        os.replace(partial, target)  # atomic: a process loading it never sees half a file
    finally:
        partial.unlink(missing_ok=True)


@cache
def load() -> ctypes.CDLL | None:
    """The compiled row statistics, built on first use; None where that is not possible."""
    if os.environ.get("PERPLEX_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None or platform.system() != "Linux":
        log.info("No C compiler found: the logit lens uses its slower torch statistics.")
        return None
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, *FLAGS, platform.machine(),
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    for folder in _build_dirs():
        target = folder / f"row_stats-{key}.so"
        try:
            if not target.exists():
                _compile(compiler, target)
            return _declare(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", "") or error
            log.warning("Could not build the lens's row statistics in %s: %s", folder, detail)
    return None


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.row_stats.argtypes = [pointer, size, size, ctypes.c_int, pointer, pointer, pointer,
                                  pointer, pointer, pointer]
    library.row_stats.restype = None
    return library


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="perplex-row-stats")


def _address(tensor: torch.Tensor | None, row: int) -> int | None:
    if tensor is None:
        return None
    return tensor.data_ptr() + row * tensor.stride(0) * tensor.element_size()


def _check(name: str, tensor: torch.Tensor | None, dtype: torch.dtype, shape: tuple) -> None:
    if tensor is None:
        return
    if tensor.dtype != dtype or tuple(tensor.shape) != shape or not tensor.is_contiguous():
        raise ValueError(f"{name} must be a contiguous {dtype} tensor of shape {shape}, got "
                         f"{tensor.dtype} {tuple(tensor.shape)}")


def row_sums(library: ctypes.CDLL, z: torch.Tensor, k: int,
             final_ids: torch.Tensor | None = None, p_final: torch.Tensor | None = None,
             p_out: torch.Tensor | None = None) -> RowSums:
    """Top-k and sums of logit rows `z` [R, V] (float32, contiguous, on the CPU).

    `final_ids` [R] (int64): the token whose rank is counted, or None for each row's top-1.
    `p_final` [R, V]: probabilities whose product with z is summed (KL's cross term).
    `p_out` [R, V]: filled with the rows' own probabilities. Rows are split between torch's
    threads; ctypes releases the GIL during each call, so they run in parallel.
    """
    n_rows, n_vocab = z.shape
    if not 1 <= k <= n_vocab:
        raise ValueError(f"k must be in 1..{n_vocab}, got {k}")
    _check("z", z, torch.float32, (n_rows, n_vocab))
    _check("final_ids", final_ids, torch.int64, (n_rows,))
    _check("p_final", p_final, torch.float32, (n_rows, n_vocab))
    _check("p_out", p_out, torch.float32, (n_rows, n_vocab))
    top_values = torch.empty((n_rows, k), dtype=torch.float32)
    top_ids = torch.empty((n_rows, k), dtype=torch.int64)
    sums = torch.empty((n_rows, N_SUMS), dtype=torch.float64)

    def run(first: int, last: int) -> None:
        library.row_stats(_address(z, first), last - first, n_vocab, k,
                          _address(final_ids, first), _address(p_final, first),
                          _address(p_out, first), _address(top_values, first),
                          _address(top_ids, first), _address(sums, first))

    workers = max(1, min(torch.get_num_threads(), n_rows))
    step = -(-n_rows // workers)
    bounds = [(a, min(n_rows, a + step)) for a in range(0, n_rows, step)]
    if len(bounds) == 1:
        run(*bounds[0])
    else:
        list(_pool(workers).map(lambda b: run(*b), bounds))
    return RowSums(top_values.numpy(), top_ids.numpy(), sums.numpy())
