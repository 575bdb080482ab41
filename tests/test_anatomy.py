"""Each architecture family's declared anatomy is where the model really keeps its parts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from perplex.engine.anatomy import AnatomyError, anatomy_of, family_of, module_paths
from tests.tiny import ARCHITECTURES, tiny_tokenizer


def _model(arch: str):
    torch.manual_seed(3)
    return ARCHITECTURES[arch](len(tiny_tokenizer())).eval().requires_grad_(False)


def _final_norm_by_hand(model):
    """The final norm, found without the anatomy: transformers' base model, by name."""
    base = model.base_model
    return base.ln_f if hasattr(base, "ln_f") else base.norm


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_declared_parts_are_the_models_own(arch):
    model = _model(arch)
    anatomy = anatomy_of(model)
    assert anatomy.unembed is model.get_output_embeddings()
    assert anatomy.final_norm is _final_norm_by_hand(model)
    assert anatomy.n_blocks == model.config.num_hidden_layers
    assert isinstance(anatomy.attn_out(0), torch.nn.Module)
    paths = module_paths(model.config)  # what a meta model on NDIF is traced at
    assert (paths.layers_path, paths.norm_path, paths.head_path) == (
        anatomy.full_layers_path, anatomy.full_norm_path, anatomy.head_path)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_unembedding_a_residual_gives_the_models_logits(arch):
    """Final norm, head and soft cap (Gemma 2) applied to the last block's output.

    The same modules on the same tensor as the model's own forward pass: exact.
    """
    model = _model(arch)
    seen = []
    hook = _final_norm_by_hand(model).register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    ids = torch.tensor([[1, 5, 9, 14, 20, 33]])
    with torch.no_grad():
        logits = model(ids).logits.float()
    hook.remove()
    with torch.no_grad():
        ours = anatomy_of(model).unembed_hidden(seen[0])
    assert torch.equal(ours, logits)
    if arch == "gemma2":
        assert ours.abs().max() <= model.config.final_logit_softcapping


def test_a_model_of_no_known_family_is_refused_with_the_families_named():
    with pytest.raises(AnatomyError, match=r"a mamba model .*Known families: Llama .*GPT-2"):
        family_of(SimpleNamespace(model_type="mamba"))
