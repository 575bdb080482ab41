"""A tiny random causal LM with a small byte-level BPE tokenizer, built in code."""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from perplex.engine.local.models import LoadedModel, ModelSpec

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] "
          "+ '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = ["The capital of France is Paris.", "The Eiffel Tower is in Paris, France.",
          "Hello world! How are you today?", "Sure, here is the answer: 42.",
          "I'm sorry, I cannot help with that.", "émoji 🙂 and ünïcode ✓ text\n\tindented"]


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A ~300-token byte-level BPE tokenizer with ChatML special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def tiny_model(seed: int = 0, layers: int = 2, tokenizer=None) -> LoadedModel:
    """A seeded random Llama with a few layers: fast and deterministic."""
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    with torch.no_grad():  # larger logits than the default init, so distributions are peaked
        model.lm_head.weight.mul_(40.0)
    return LoadedModel(ModelSpec(source="tiny-test"), model, tokenizer, load_seconds=0.0)


def _with_head_bias(model):
    """The model with a language-model head that adds a bias (as some checkpoints have)."""
    head = torch.nn.Linear(model.config.n_embd, model.config.vocab_size, bias=True)
    torch.nn.init.normal_(head.bias, std=2.0)
    model.set_output_embeddings(head)
    return model


# Tiny random models of other architecture families, for the lens and anatomy tests.
ARCHITECTURES = {
    "gpt2": lambda v: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=128)),
    "qwen2": lambda v: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)),
    "mistral": lambda v: transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)),
    "gemma": lambda v: transformers.GemmaForCausalLM(transformers.GemmaConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=128)),
    "gpt2-head-bias": lambda v: _with_head_bias(transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                tie_word_embeddings=False))),
    "gemma2": lambda v: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=128, final_logit_softcapping=5.0)),
}
