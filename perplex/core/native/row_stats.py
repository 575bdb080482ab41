"""Per-row statistics of logit rows in compiled code (`row_stats.c`), for the logit lens.

The lens needs, for every (layer, position) row of ~50k logits: the top-k, log Z, entropy,
the final token's rank and the cross term of the KL to the final layer. In torch that is
about ten passes over each row through separate kernels; the C code reads each span of a
row twice while it is in cache (top-k, then one fused pass of exp and sums): about 0.2 s
instead of 0.73 s for a 128-token lens of the bundled model. `row_sums` takes whole rows;
`TileSums` takes them one vocabulary tile at a time, so the logits never need to exist
in full (see `perplex.lens.stats`).

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
FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")
# For this CPU: with AVX2 and FMA the C code takes its 8-wide path. Without the flag it
# builds for any CPU of the architecture and takes its scalar path (tested as well).
NATIVE_FLAGS = ("-march=native",)
# Rows split between the threads of the OpenMP runtime torch has loaded (see row_stats.c);
# where the compiler has no OpenMP, the build goes without and Python threads split them.
OPENMP_FLAGS = ("-fopenmp",)
BUILD_SECONDS = 120
N_SUMS = 4  # Σ e, Σ e·z, Σ p_final·z, count above the final token (see row_stats.c)
MODERATE_LOGIT = 1e30  # logits beyond ± this go through torch (see `takes`)


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


def _compile(compiler: str, flags: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        subprocess.run([compiler, *flags, "-o", str(partial), str(SOURCE), "-lm"], check=True,
                       capture_output=True, text=True, timeout=BUILD_SECONDS)
        os.replace(partial, target)  # atomic: a process loading it never sees half a file
    finally:
        partial.unlink(missing_ok=True)


def switched_off() -> bool:
    """Whether `PERPLEX_NATIVE=0` (or false/no/off) turns the compiled statistics off."""
    return os.environ.get("PERPLEX_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}


def compiler() -> str | None:
    """The C compiler to build with (`CC`, else cc or gcc), or None."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@cache
def load(for_this_cpu: bool = True, openmp: bool = True) -> ctypes.CDLL | None:
    """The compiled row statistics, built on first use; None where that is not possible.

    `for_this_cpu=False` builds the portable (scalar) variant and `openmp=False` one that
    leaves the threads to Python: the paths other machines take, which tests check too.
    """
    if switched_off():
        return None
    cc = compiler()
    if cc is None or platform.system() != "Linux":
        log.info("No C compiler found: the logit lens uses its slower torch statistics.")
        return None
    flags = FLAGS + (NATIVE_FLAGS if for_this_cpu else ())
    built_for = [SOURCE.read_text(), cc, platform.machine(), _cpu_signature()]
    for folder in _build_dirs():
        for extra in (OPENMP_FLAGS, ()) if openmp else ((),):
            key = hashlib.sha256("\n".join([*built_for, *flags, *extra]).encode())
            target = folder / f"row_stats-{key.hexdigest()[:16]}.so"
            try:
                if not target.exists():
                    _compile(cc, flags + extra, target)
                return _declare(ctypes.CDLL(str(target)))
            except (OSError, subprocess.SubprocessError) as error:
                detail = getattr(error, "stderr", "") or error
                log.warning("Could not build the lens's row statistics with %s in %s: %s",
                            " ".join(flags + extra), folder, detail)
    return None


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.row_stats.argtypes = [pointer, size, size, ctypes.c_int, pointer, pointer, pointer,
                                  pointer, pointer, pointer, ctypes.c_int]
    library.row_stats.restype = None
    library.tile_stats.argtypes = [pointer, size, size, size, ctypes.c_int, ctypes.c_int, size,
                                   size, pointer, pointer, size, pointer, pointer, pointer,
                                   pointer, pointer, pointer, pointer, ctypes.c_int, pointer,
                                   ctypes.c_int]
    library.tile_stats.restype = None
    library.pair_divergence.argtypes = [pointer, pointer, size, size, pointer, ctypes.c_int]
    library.pair_divergence.restype = ctypes.c_int
    library.splits_rows.argtypes = []
    library.splits_rows.restype = ctypes.c_int
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
    number of threads (`_in_threads`).
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

    def run(first: int, last: int, threads: int) -> None:
        library.row_stats(_address(z, first), last - first, n_vocab, k,
                          _address(final_ids, first), _address(p_final, first),
                          _address(p_out, first), _address(top_values, first),
                          _address(top_ids, first), _address(sums, first), threads)

    _in_threads(library, run, n_rows)
    return RowSums(top_values.numpy(), top_ids.numpy(), sums.numpy())


def takes(z: torch.Tensor) -> bool:
    """Whether the compiled code computes exactly what torch would for logits `z`.

    Its exp floors at exp(-87.3): times a logit near -3e38 (a mask written as float32's
    lowest) that would no longer vanish, and -inf or NaN would give NaN. Such rows must go
    through torch. One min/max pass (ten times faster than `isfinite`).
    """
    low, high = torch.aminmax(z)
    return bool(low > -MODERATE_LOGIT) and bool(high < MODERATE_LOGIT)


def pair_divergence(library: ctypes.CDLL, za: torch.Tensor, zb: torch.Tensor) -> np.ndarray:
    """[R, 3] float64: KL(p‖q), KL(q‖p) and JS of the softmax of finite rows za, zb [R, V].

    Rows equal everywhere give exactly 0. Rows are split as in `row_sums`.
    """
    _check("za", za, torch.float32, tuple(za.shape))
    _check("zb", zb, torch.float32, tuple(za.shape))
    n_rows, n_vocab = za.shape
    out = torch.empty((n_rows, 3), dtype=torch.float64)
    failed = []

    def run(first: int, last: int, threads: int) -> None:
        if library.pair_divergence(_address(za, first), _address(zb, first), last - first,
                                   n_vocab, _address(out, first), threads):
            failed.append(first)

    if n_rows:
        _in_threads(library, run, n_rows)
    if failed:
        raise MemoryError(f"no room for the divergence's scratch space ({n_vocab} tokens)")
    return out.numpy()


def _in_threads(library: ctypes.CDLL, run, n_rows: int) -> None:
    """run(first, last, threads) over all rows on torch's number of threads.

    A build with OpenMP splits the rows itself; otherwise they are split here between
    Python threads (ctypes releases the GIL during each call).
    """
    workers = max(1, min(torch.get_num_threads(), n_rows))
    if library.splits_rows():
        run(0, n_rows, workers)
        return
    step = -(-n_rows // workers)
    bounds = [(a, min(n_rows, a + step)) for a in range(0, n_rows, step)]
    if len(bounds) == 1:
        run(*bounds[0], 1)
    else:
        list(_pool(workers).map(lambda b: run(*b, 1), bounds))


class TileSums:
    """The state of rows fed one vocabulary tile at a time (`tile_stats` in row_stats.c).

    Rows are layer-major over `positions` positions: row r is at position r % positions,
    whose final token is `final_ids[position]` and whose final distribution is
    `p_final[position]` (the KL's cross term). The final token's rank is counted against
    bounds [lo, hi] on its logit known before its tile comes: logits above `hi` are counted,
    those in (lo, hi] are kept (up to `band_cap` per row) to be compared with the exact
    logit afterwards (`above`).
    """

    def __init__(self, library: ctypes.CDLL, n_rows: int, k: int, final_ids: torch.Tensor,
                 p_final: torch.Tensor | None, lo: torch.Tensor, hi: torch.Tensor,
                 band_cap: int) -> None:
        positions = len(final_ids)
        if n_rows % positions:
            raise ValueError(f"{n_rows} rows are not whole layers of {positions} positions")
        _check("final_ids", final_ids, torch.int64, (positions,))
        _check("lo", lo, torch.float32, (n_rows,))
        _check("hi", hi, torch.float32, (n_rows,))
        if p_final is not None:
            _check("p_final", p_final, torch.float32, (positions, p_final.shape[1]))
        self.library, self.k, self.band_cap = library, k, band_cap
        self.final_ids, self.p_final, self.lo, self.hi = final_ids, p_final, lo, hi
        self.top_values = torch.empty((n_rows, k), dtype=torch.float32)
        self.top_ids = torch.empty((n_rows, k), dtype=torch.int64)
        self.sums = torch.empty((n_rows, N_SUMS), dtype=torch.float64)
        self.band = torch.empty((n_rows, band_cap), dtype=torch.float32)
        self.band_count = torch.zeros(n_rows, dtype=torch.int32)
        self.final_logit = torch.full((n_rows,), float("nan"), dtype=torch.float32)
        self.columns_done = 0

    def add(self, z: torch.Tensor, col0: int) -> None:
        """Feed the tile z [n_rows, n_cols] of token ids col0 ... (tiles in order, no gaps)."""
        n_rows, n_cols = z.shape
        if col0 != self.columns_done:
            raise ValueError(f"tiles must come in order: expected column {self.columns_done}")
        _check("z", z, torch.float32, (len(self.sums), n_cols))
        n_vocab = 0 if self.p_final is None else self.p_final.shape[1]
        positions = len(self.final_ids)

        def run(first: int, last: int, threads: int) -> None:
            self.library.tile_stats(
                _address(z, first), last - first, n_cols, col0, self.k, int(col0 == 0), first,
                positions, _address(self.final_ids, 0), _address(self.p_final, 0), n_vocab,
                _address(self.lo, first), _address(self.hi, first),
                _address(self.top_values, first), _address(self.top_ids, first),
                _address(self.sums, first),
                _address(self.band, first), _address(self.band_count, first), self.band_cap,
                _address(self.final_logit, first), threads)

        _in_threads(self.library, run, n_rows)
        self.columns_done += n_cols

    def above(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: logits above the final token's own, and whether that count is exact.

        Not exact where the band overflowed or the exact logit fell outside (lo, hi]: the
        caller recounts those rows.
        """
        count = self.band_count.numpy()
        exact_logit = self.final_logit.numpy()
        band = self.band.numpy()
        kept = np.arange(self.band_cap)[None, :] < np.minimum(count, self.band_cap)[:, None]
        in_band = ((band > exact_logit[:, None]) & kept).sum(axis=1)
        ok = ((count <= self.band_cap) & (exact_logit > self.lo.numpy())
              & (exact_logit <= self.hi.numpy()))
        return self.sums.numpy()[:, 3] + in_band, ok
