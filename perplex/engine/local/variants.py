"""Copies of the bundled model made here, so comparisons have real pairs offline.

- **terse**: a short, seeded fine-tune of the bundled model on `data/finetune/terse.jsonl`
  (questions with one-line answers): the answers' tokens only carry the loss, the last
  blocks and the final norm are trained (AdamW), everything else stays frozen.
- **int8**: every linear weight of the blocks rounded to int8, symmetric per output
  channel (scale = max |w| / 127), stored and computed in float32 (W8A32): the copy
  carries exactly the error int8 weights introduce.

Each copy is written once under `Settings.models_dir` as a model folder, keyed by what
made it (base weights, data, seed, steps), and later loads find it. `python -m
perplex.engine.local.variants` (the `make variants` target) makes both.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from perplex.core.errors import ModelLoadError
from perplex.core.records import Message, TokenRole
from perplex.core.settings import Settings, load_settings
from perplex.core.tokens import encode_messages
from perplex.engine.anatomy import anatomy_of
from perplex.engine.local.models import BUNDLED_NAME, bundled_gguf_path, converted_gguf_folder

TERSE_DATA = Path(__file__).resolve().parents[3] / "data" / "finetune" / "terse.jsonl"
VARIANT_KINDS = ("terse", "int8")


@dataclass(frozen=True)
class FineTune:
    """How the terse copy is trained (part of its folder's key: change one, get a new copy)."""

    seed: int = 0
    steps: int = 16
    batch_size: int = 8
    learning_rate: float = 1e-4
    trained_blocks: int = 8  # the last blocks train; earlier ones and the embedding stay


def bundled_folder(settings: Settings | None = None) -> Path:
    """The safetensors copy of the bundled model (converted on first use)."""
    settings = settings or load_settings()
    return converted_gguf_folder(bundled_gguf_path(), settings.models_dir)[0]


def variant_folder(kind: str, settings: Settings | None = None,
                   progress: Callable[[str], None] | None = None) -> Path:
    """The folder of the bundled model's `kind` copy ("terse" or "int8"), made if missing."""
    settings = settings or load_settings()
    base = bundled_folder(settings)
    if kind == "terse":
        return finetuned_copy(base, TERSE_DATA, settings.models_dir, FineTune(), progress)
    if kind == "int8":
        return int8_copy(base, settings.models_dir)
    raise ModelLoadError(f"Unknown copy {kind!r}: choose one of {', '.join(VARIANT_KINDS)}.")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of a JSONL file with "prompt" and "answer" strings."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not (isinstance(row.get("prompt"), str) and isinstance(row.get("answer"), str)):
            raise ModelLoadError(f"{path.name} line {number}: need \"prompt\" and \"answer\".")
        pairs.append((row["prompt"], row["answer"]))
    return pairs


def finetuned_copy(base: Path, data: Path, out_dir: Path, plan: FineTune = FineTune(),
                   progress: Callable[[str], None] | None = None) -> Path:
    """The fine-tuned copy of the model in `base` on `data`, trained once and kept."""
    key = _digest(base.name, data.read_bytes(), json.dumps(asdict(plan), sort_keys=True))
    folder = out_dir / f"{BUNDLED_NAME}-terse-{key}"
    if _complete(folder):
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    train(model, tokenizer, read_pairs(data), plan, progress)
    _save(model, tokenizer, folder, {"made_from": str(base), "kind": "terse",
                                     "data": data.name, **asdict(plan)})
    return folder


def train(model, tokenizer, pairs: list[tuple[str, str]], plan: FineTune,
          progress: Callable[[str], None] | None = None) -> None:
    """Train `model` in place on the answers of `pairs`; deterministic for a seed."""
    torch.manual_seed(plan.seed)
    order = random.Random(plan.seed)
    examples = [_example(tokenizer, prompt, answer) for prompt, answer in pairs]
    model.requires_grad_(False)
    parts = anatomy_of(model)
    trained = [*parts.blocks[parts.n_blocks - plan.trained_blocks:], parts.final_norm]
    params = [p for module in trained for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=0.0)
    model.train()
    started = time.perf_counter()
    for step in range(plan.steps):
        batch = order.sample(examples, min(plan.batch_size, len(examples)))
        ids, labels, mask = _padded(batch, tokenizer.pad_token_id or 0)
        loss = _answer_loss(parts, ids, mask, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress:
            progress(f"fine-tune step {step + 1}/{plan.steps}: loss {loss.item():.3f} "
                     f"({time.perf_counter() - started:.0f} s)")
    model.eval().requires_grad_(False)


def _answer_loss(parts, ids, mask, labels) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens; logits only where a label follows."""
    hidden = parts.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    where = target != -100
    logits = parts.logits(hidden[:, :-1][where])
    return torch.nn.functional.cross_entropy(logits, target[where])


def _example(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of the chat and their labels: the answer's tokens and end of turn, else -100."""
    seq = encode_messages(tokenizer, (Message("user", prompt), Message("assistant", answer)),
                          add_generation_prompt=False)
    ids = list(seq.ids)
    answer_at = [i for i, role in enumerate(seq.roles) if role is TokenRole.RESPONSE]
    last = answer_at[-1] + 1 if answer_at else len(ids)  # the end-of-turn token after it
    keep = set(answer_at) | ({last} if last < len(ids) else set())
    return ids, [t if i in keep else -100 for i, t in enumerate(ids)]


def _padded(batch, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), length), pad, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, (seq, lab) in enumerate(batch):
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, :len(seq)] = torch.tensor(lab)
        mask[row, :len(seq)] = 1
    return ids, labels, mask


def int8_copy(base: Path, out_dir: Path) -> Path:
    """The copy of `base` with int8-rounded block weights (W8A32), made once and kept."""
    folder = out_dir / f"{BUNDLED_NAME}-int8-{_digest(base.name, b'per-channel symmetric')}"
    if _complete(folder):
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        for module in anatomy_of(model).blocks.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(int8_rounded(module.weight))
    _save(model, tokenizer, folder, {"made_from": str(base), "kind": "int8",
                                     "scheme": "per-output-channel symmetric, W8A32"})
    return folder


def int8_rounded(weight: torch.Tensor) -> torch.Tensor:
    """`weight` [out, in] through int8 and back: round(w / s) · s, s = max |row| / 127."""
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


def weights_hash(folder: Path) -> str:
    """SHA-256 over the tensors of a model folder's safetensors files (names and bytes)."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in sorted(f.keys()):
                digest.update(name.encode())
                digest.update(f.get_tensor(name).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
    return h.hexdigest()[:10]


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _save(model, tokenizer, folder: Path, made: dict) -> None:
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / "perplex-source.json").write_text(json.dumps(made, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def main() -> None:
    """Make both copies of the bundled model (the `make variants` target)."""
    for kind in VARIANT_KINDS:
        started = time.perf_counter()
        folder = variant_folder(kind, progress=lambda line: print(line, flush=True))
        print(f"{kind}: {folder} ({time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
