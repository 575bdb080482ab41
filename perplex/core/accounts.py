"""Who may sign in to a team-hosted Perplex: a users file of scrypt password hashes.

For teams without an identity provider (with one, Streamlit's `st.login` is used instead;
see README "Hosting for a team"). Each line of the file is

    name:scrypt:<log2 n>:<r>:<p>:<salt, base64>:<hash, base64>

written by `python -m perplex.core.accounts add NAME` (it asks for the password twice).
The standard library's `hashlib.scrypt` is used rather than a sign-in package: it is the
memory-hard hash the Python docs recommend for passwords, it needs no dependency, and the
file format stays ours to validate. Comparisons are constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from perplex.core.errors import InputFormatError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
LOG2_N, R, P = 15, 8, 1  # scrypt cost: 32 MiB and ~0.1 s per check
MAX_LOG2_N = 20  # a users file may not make one check cost more than 1 GiB
MIN_PASSWORD_CHARS = 10
SALT_BYTES = 16
HASH_BYTES = 32


@dataclass(frozen=True)
class Account:
    """One user: a name and the scrypt hash of their password."""

    name: str
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def line(self) -> str:
        """The account as a line of the users file."""
        return ":".join([self.name, "scrypt", str(self.log2_n), str(self.r), str(self.p),
                         base64.b64encode(self.salt).decode(),
                         base64.b64encode(self.digest).decode()])


def new_account(name: str, password: str) -> Account:
    """An account with a fresh random salt (the name and password checked)."""
    if not NAME.match(name):
        raise InputFormatError(f"A user name is 1-64 letters, digits or . _ @ - (got {name!r}).")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InputFormatError(f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    salt = os.urandom(SALT_BYTES)
    return Account(name, LOG2_N, R, P, salt, _hash(password, salt, LOG2_N, R, P))


def read_accounts(path: Path) -> dict[str, Account]:
    """The users file's accounts by name; a malformed line raises InputFormatError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"The users file {path} cannot be read ({exc}).") from None
    accounts: dict[str, Account] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        account = _parse_line(line.strip(), f"{path.name} line {number}")
        if account.name in accounts:
            raise InputFormatError(f"{path.name} line {number}: {account.name!r} is there twice.")
        accounts[account.name] = account
    return accounts


def check_password(accounts: dict[str, Account], name: str, password: str) -> bool:
    """Whether `password` is `name`'s. An unknown name costs as much as a wrong password."""
    account = accounts.get(name)
    if account is None:
        _hash(password, b"\0" * SALT_BYTES, LOG2_N, R, P)  # the same time as a real check
        return False
    found = _hash(password, account.salt, account.log2_n, account.r, account.p)
    return hmac.compare_digest(found, account.digest)


def _hash(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=2**log2_n,
                          r=r, p=p, maxmem=2**31 - 1, dklen=HASH_BYTES)


def _parse_line(line: str, where: str) -> Account:
    parts = line.split(":")
    if len(parts) != 7 or parts[1] != "scrypt":
        raise InputFormatError(f"{where} is not name:scrypt:log2n:r:p:salt:hash. Write accounts "
                               "with `python -m perplex.core.accounts add NAME`.")
    name, _, log2_n, r, p, salt, digest = parts
    if not NAME.match(name):
        raise InputFormatError(f"{where}: {name!r} is not a valid user name.")
    try:
        cost = (int(log2_n), int(r), int(p))
        salt_bytes = base64.b64decode(salt, validate=True)
        digest_bytes = base64.b64decode(digest, validate=True)
    except ValueError:
        raise InputFormatError(f"{where}: the cost, salt or hash is malformed.") from None
    if not (10 <= cost[0] <= MAX_LOG2_N and 1 <= cost[1] <= 32 and 1 <= cost[2] <= 4) or \
            len(salt_bytes) < 8 or len(digest_bytes) != HASH_BYTES:
        raise InputFormatError(f"{where}: the scrypt cost, salt or hash is out of range.")
    return Account(name, *cost, salt_bytes, digest_bytes)


def main(argv: list[str]) -> int:
    """`add NAME [FILE]`: append an account to the users file (default: $PERPLEX_USERS)."""
    if len(argv) not in (2, 3) or argv[0] != "add":
        print("usage: python -m perplex.core.accounts add NAME [USERS_FILE]", file=sys.stderr)
        return 2
    target = Path(argv[2] if len(argv) == 3 else os.environ.get("PERPLEX_USERS", "users.txt"))
    existing = read_accounts(target) if target.exists() else {}
    if argv[1] in existing:
        print(f"{argv[1]!r} is already in {target}.", file=sys.stderr)
        return 1
    password = getpass.getpass(f"Password for {argv[1]}: ")
    if getpass.getpass("Again: ") != password:
        print("The two passwords differ; nothing was written.", file=sys.stderr)
        return 1
    try:
        account = new_account(argv[1], password)
    except InputFormatError as exc:
        print(exc, file=sys.stderr)
        return 1
    with target.open("a", encoding="utf-8") as out:
        out.write(account.line() + "\n")
    target.chmod(0o600)
    print(f"Added {account.name} to {target}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
