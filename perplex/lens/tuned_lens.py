"""A tuned lens: one affine translator per layer, trained to read each layer as the output.

The tuned-lens recipe (Belrose et al., 2023): layer l's residual h is read as
h + h·A_l + b_l before the model's own final norm and unembedding; A_l and b_l start at
zero (the logit lens) and are trained to minimise KL(output ‖ lens at layer l), the
output's distribution taken from the same pass. The model is not changed: only the
translators learn. The last layer is the output itself and has no translator.

Training reads text the project ships (`corpus_texts`), cut into windows; every
`HOLD_OUT`-th window is held out, and the mean KL per layer on those windows is what the
page and `make bench` report for both lenses. The translators are stored as safetensors
(never a pickle) under the Perplex home, keyed by the model's spec.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

from perplex.core.errors import PerplexError
from perplex.core.settings import PROJECT_ROOT
from perplex.engine.unembed import soft_cap

WINDOW = 128  # tokens per training window
HOLD_OUT = 8  # every 8th window is held out for evaluation
BATCH = 64  # positions per training step (every layer at once)
LEARNING_RATE = 1e-3
MAX_TRAIN_TOKENS = 8192  # text read (7/8 trained on): every layer's residuals are held in memory


@dataclass(frozen=True, eq=False)
class TunedLens:
    """Translators of layers 0..L-1 (`weights` [L, d, d], `biases` [L, d]) and their history."""

    weights: torch.Tensor
    biases: torch.Tensor
    model_spec: str
    steps: int
    tokens: int  # training tokens (the held-out windows not among them)
    seconds: float
    held_out_kl: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # logit, tuned: [L+1]

    def translate(self, residuals: torch.Tensor) -> torch.Tensor:
        """Residuals [L+1, T, d] as the tuned lens reads them (the last layer unchanged)."""
        n = self.weights.shape[0]
        if residuals.shape[0] != n + 1:
            raise PerplexError(f"This tuned lens has {n} translators; the model has "
                               f"{residuals.shape[0] - 1} layers. Train one for this model.")
        head = residuals[:n].float()
        moved = head + torch.baddbmm(self.biases[:, None, :], head, self.weights)
        return torch.cat([moved, residuals[n:].float()])


def corpus_texts() -> list[str]:
    """Text the project ships: the README and the calibration samples' questions."""
    texts = [(PROJECT_ROOT / "README.md").read_text(encoding="utf-8")]
    for name in ("trivia_sample.jsonl", "mmlu_sample.jsonl"):
        lines = (PROJECT_ROOT / "data" / "calibration" / name).read_text("utf-8").splitlines()
        texts.append("\n".join(json.loads(line)["question"] for line in lines if line.strip()))
    return texts


def windows(engine, texts: Sequence[str], max_tokens: int = MAX_TRAIN_TOKENS
            ) -> tuple[list[list[int]], list[list[int]]]:
    """(training, held-out) windows of `WINDOW` tokens cut from `texts`."""
    ids: list[int] = []
    for text in texts:
        ids += list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    cut = [ids[i:i + WINDOW] for i in range(0, min(len(ids), max_tokens) - WINDOW + 1, WINDOW)]
    held = [w for n, w in enumerate(cut) if n % HOLD_OUT == HOLD_OUT - 1]
    train = [w for n, w in enumerate(cut) if n % HOLD_OUT != HOLD_OUT - 1]
    if not train or not held:
        raise PerplexError("Too little text to train a tuned lens on.")
    return train, held


class Training:
    """Translators being trained; kept between script runs, so Stop keeps every step done."""

    def __init__(self, engine, train: Sequence[Sequence[int]], seed: int = 0) -> None:
        """Capture every layer's residuals for the training windows (one pass each)."""
        self.engine = engine
        with torch.inference_mode():
            streams = [engine.residual_stream(list(w)).float() for w in train]
        self.residuals = torch.cat(streams, dim=1).clone()  # [L+1, N, d]
        layers, _, d = self.residuals.shape
        self.weights = torch.zeros(layers - 1, d, d, requires_grad=True)
        self.biases = torch.zeros(layers - 1, d, requires_grad=True)
        self.optimiser = torch.optim.Adam([self.weights, self.biases], lr=LEARNING_RATE)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps, self.seconds = 0, 0.0
        unembed = engine.unembedding
        self._norm_params = {k: v.detach() for k, v in unembed.final_norm.named_parameters()}
        self._unembed = unembed

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        u = self._unembed
        normed = functional_call(u.final_norm, self._norm_params, (hidden.to(u.norm_dtype),))
        logits = torch.nn.functional.linear(normed.float(), u.weight, u.bias)
        return soft_cap(logits, u.softcap)

    def step(self) -> float:
        """One step over `BATCH` random positions, every layer; returns the mean KL (nats)."""
        started = time.perf_counter()
        n = self.residuals.shape[1]
        picked = torch.randint(0, n, (min(BATCH, n),), generator=self.generator)
        batch = self.residuals[:, picked]
        with torch.no_grad():
            target = torch.log_softmax(self._logits(batch[-1]), -1)
        head = batch[:-1]
        moved = head + torch.baddbmm(self.biases[:, None, :], head, self.weights)
        logp = torch.log_softmax(self._logits(moved), -1)
        kl = (target.exp() * (target - logp)).sum(-1).mean()
        self.optimiser.zero_grad()
        (kl * (self.residuals.shape[0] - 1)).backward()  # the sum over layers
        self.optimiser.step()
        self.steps += 1
        self.seconds += time.perf_counter() - started
        return float(kl.detach())

    def lens(self) -> TunedLens:
        """The translators as they are now."""
        return TunedLens(self.weights.detach().clone(), self.biases.detach().clone(),
                         self.engine.info.spec, self.steps,
                         int(self.residuals.shape[1]), self.seconds)


def train(engine, steps: int, progress: Callable[[int, int, float], None] | None = None,
          training: Training | None = None) -> TunedLens:
    """Train (or go on training) to `steps`; `progress(done, steps, mean KL)` after each."""
    if training is None:
        training = Training(engine, windows(engine, corpus_texts())[0])
    while training.steps < steps:
        kl = training.step()
        if progress is not None:
            progress(training.steps, steps, kl)
    return training.lens()


def evaluated(engine, lens: TunedLens, held: Sequence[Sequence[int]]) -> TunedLens:
    """`lens` with both lenses' mean KL per layer on the held-out windows."""
    base, tuned = mean_kl(engine, held), mean_kl(engine, held, lens)
    return replace(lens, held_out_kl=(tuple(map(float, base)), tuple(map(float, tuned))))


def mean_kl(engine, held: Sequence[Sequence[int]], lens: TunedLens | None = None) -> np.ndarray:
    """[L+1] mean KL(output ‖ layer) over the held-out windows' positions, nats."""
    from perplex.lens.logit_lens import compute_lens

    rows = [compute_lens(engine, list(w), translator=None if lens is None else lens.translate)
            .kl_to_final for w in held]
    return np.concatenate(rows).mean(axis=0)


def lens_path(home: Path, model_spec: str) -> Path:
    """Where the tuned lens of the model `model_spec` is kept."""
    digest = hashlib.sha256(model_spec.encode("utf-8")).hexdigest()[:16]
    return home / "tuned-lens" / f"{digest}.safetensors"


def save(lens: TunedLens, home: Path) -> Path:
    """Store the translators (safetensors) with what they were trained on."""
    from safetensors.torch import save_file

    path = lens_path(home, lens.model_spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weights": lens.weights.contiguous(), "biases": lens.biases.contiguous()},
              str(path), metadata={"model_spec": lens.model_spec, "steps": str(lens.steps),
                                   "tokens": str(lens.tokens), "seconds": str(lens.seconds),
                                   "held_out_kl": json.dumps(lens.held_out_kl)})
    return path


def load(home: Path, model_spec: str) -> TunedLens | None:
    """The stored tuned lens of `model_spec`, or None where none was trained."""
    from safetensors import SafetensorError, safe_open

    path = lens_path(home, model_spec)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights, biases = f.get_tensor("weights"), f.get_tensor("biases")
    except (SafetensorError, OSError) as exc:
        raise PerplexError(f"{path} cannot be read as a tuned lens ({exc}): train it "
                           "again.") from exc
    try:
        kl = json.loads(meta.get("held_out_kl", "[[], []]"))
        held_out = (tuple(float(x) for x in kl[0]), tuple(float(x) for x in kl[1]))
        steps, tokens = int(meta.get("steps", 0)), int(meta.get("tokens", 0))
        seconds = float(meta.get("seconds", 0.0))
    except (TypeError, ValueError, IndexError) as exc:
        raise PerplexError(f"{path} has unreadable metadata: train the lens again.") from exc
    if meta.get("model_spec") != model_spec or weights.ndim != 3 or biases.ndim != 2 \
            or weights.shape[0] != biases.shape[0] or not torch.isfinite(weights).all():
        raise PerplexError(f"{path} is not a tuned lens of this model: train it again.")
    return TunedLens(weights.float(), biases.float(), model_spec, steps, tokens, seconds,
                     held_out)
