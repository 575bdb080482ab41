"""Team hosting: the users file of scrypt hashes, sign-in, and the model allow-list."""

from __future__ import annotations

import pytest

from perplex.core import accounts
from perplex.core.accounts import check_password, new_account, read_accounts
from perplex.core.errors import InputFormatError, ModelLoadError
from perplex.core.settings import load_settings
from perplex.engine.local.models import ModelSpec, load_model

PASSWORD = "correct horse battery"


@pytest.fixture
def users_file(tmp_path, monkeypatch):
    monkeypatch.setattr(accounts, "LOG2_N", 10)  # cheap hashes in tests (still scrypt)
    path = tmp_path / "users.txt"
    path.write_text("# the team\n" + new_account("ada", PASSWORD).line() + "\n\n"
                    + new_account("bob", "another long one").line() + "\n")
    return path


def test_passwords_check_against_their_scrypt_hash_only(users_file):
    found = read_accounts(users_file)
    assert set(found) == {"ada", "bob"}
    assert check_password(found, "ada", PASSWORD)
    assert not check_password(found, "ada", PASSWORD + " ")
    assert not check_password(found, "bob", PASSWORD)  # another user's password
    assert not check_password(found, "eve", PASSWORD)  # nobody of that name
    assert PASSWORD not in users_file.read_text()
    again = new_account("ada", PASSWORD)
    assert again.salt != found["ada"].salt and again.digest != found["ada"].digest


@pytest.mark.parametrize("line, says", [
    ("ada:plain:secret", "is not name:scrypt"),
    ("ada:scrypt:15:8:1:bm90IGJhc2U2NA==:!!!", "malformed"),
    ("ada:scrypt:40:8:1:c2FsdHNhbHRzYWx0:" + "A" * 44, "out of range"),  # 2^40: 1 TiB a check
    ("../x:scrypt:15:8:1:c2FsdHNhbHRzYWx0:" + "A" * 44, "not a valid user name"),
])
def test_a_malformed_users_file_is_refused_naming_the_line(tmp_path, line, says):
    path = tmp_path / "users.txt"
    path.write_text("# ok\n" + line + "\n")
    with pytest.raises(InputFormatError, match=f"users.txt line 2.*{says}|{says}"):
        read_accounts(path)


def test_names_and_short_passwords_are_refused():
    with pytest.raises(InputFormatError, match="user name"):
        new_account("a b", PASSWORD)
    with pytest.raises(InputFormatError, match="at least 10"):
        new_account("ada", "short")


def test_the_command_adds_an_account_asking_twice(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(accounts, "LOG2_N", 10)
    answers = iter([PASSWORD, PASSWORD, PASSWORD, "typo"])
    monkeypatch.setattr(accounts.getpass, "getpass", lambda _prompt: next(answers))
    path = tmp_path / "users.txt"
    assert accounts.main(["add", "ada", str(path)]) == 0
    assert check_password(read_accounts(path), "ada", PASSWORD)
    assert path.stat().st_mode & 0o077 == 0  # readable by the operator only
    assert accounts.main(["add", "bob", str(path)]) == 1  # the two entries differ
    assert "differ" in capsys.readouterr().err and set(read_accounts(path)) == {"ada"}


def test_a_hosted_server_loads_only_allowed_models_and_says_nothing_of_paths(tmp_path):
    settings = load_settings({"PERPLEX_HOSTED": "1", "PERPLEX_ALLOWED_MODELS": "org/allowed",
                              "PERPLEX_HOME": str(tmp_path)})
    messages = set()
    for source in ("/etc", "/does/not/exist", "HuggingFaceTB/other-model", "~/.ssh"):
        with pytest.raises(ModelLoadError, match="only the models its operator allowed: "
                                                 "bundled, org/allowed") as refused:
            load_model(ModelSpec(source=source), settings)
        messages.add(str(refused.value))
    assert len(messages) == 1  # the same words whether the path exists or not
    with pytest.raises(ModelLoadError, match="own code"):
        load_model(ModelSpec(source="org/allowed", trust_remote_code=True), settings)
