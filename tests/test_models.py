"""Model loading: the bundled model, and clear messages for everything that can go wrong."""

from __future__ import annotations

import json

import pytest
import torch

from perplex.core.errors import ModelLoadError
from perplex.core.settings import Settings, load_settings
from perplex.engine.local.models import ModelSpec, converted_gguf_folder, load_model


def test_unknown_model_id_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="cannot be reached") as err:
        load_model(ModelSpec(source="nobody/no-such-model-xyz"))
    assert "local folder" in str(err.value)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(ModelSpec(source=str(tmp_path)))


@pytest.mark.parametrize("config", [{"model_type": "bert", "architectures": ["BertForMaskedLM"]},
                                    {"model_type": "vit"}])
def test_folder_with_a_non_causal_model_is_refused(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a causal language model"):
        load_model(ModelSpec(source=str(tmp_path)))


def test_broken_gguf_file_gets_a_clear_message(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="Could not read broken.gguf as a GGUF model"):
        converted_gguf_folder(bad, tmp_path / "models")


def test_missing_gguf_and_unknown_dtype(tmp_path):
    with pytest.raises(ModelLoadError, match="No GGUF file"):
        load_model(ModelSpec(source=str(tmp_path / "absent.gguf")))
    with pytest.raises(ModelLoadError, match="Unknown dtype"):
        load_model(ModelSpec(dtype="int3"))


def test_trust_remote_code_is_off_unless_a_setting_turns_it_on():
    assert ModelSpec().trust_remote_code is False
    assert load_settings({}).trust_remote_code is False
    assert load_settings({"PERPLEX_TRUST_REMOTE_CODE": "1"}).trust_remote_code is True


def test_settings_come_from_the_environment(tmp_path):
    s = load_settings({"PERPLEX_HOME": str(tmp_path), "PERPLEX_CONFIDENT_THRESHOLD": "0.8"})
    assert s.database == tmp_path / "perplex.duckdb"
    assert s.confident_threshold == 0.8
    assert Settings(db_path=tmp_path / "x.duckdb").database == tmp_path / "x.duckdb"


def test_bundled_model_facts(bundled_lm):
    assert bundled_lm.n_layers == 30
    assert bundled_lm.vocab_size == 49152
    assert 130e6 < bundled_lm.n_params < 140e6
    assert bundled_lm.tokenizer.eos_token_id in bundled_lm.eos_ids


class _Runs:
    """Unpickling this would call `print` (a stand-in for code a checkpoint could run)."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_pickled_pytorch_model_bin_that_is_not_plain_tensors_is_refused(tmp_path, capsys):
    """Defect (issue 18, point 8): a raw UnpicklingError advising `weights_only=False`."""
    import safetensors.torch

    from tests.tiny import tiny_model

    lm = tiny_model()
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    weights = safetensors.torch.load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save({**weights, "extra": _Runs()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only as plain tensors") as refused:
        load_model(ModelSpec(source=str(tmp_path)))
    assert "weights_only" not in str(refused.value)
    assert "unpickled code ran" not in capsys.readouterr().out
