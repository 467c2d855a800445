"""The vault's stored format: values sealed before the switch from `cryptography` to `pycryptodome` still
unseal, and a wrong master key or a tampered value is still reported as such."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kv import MemoryKV
from worker.auth import KeyStore, MasterKeyError
from worker.vault import Vault, VaultError

# Sealed by worker/vault.py on `cryptography` 51 (AESGCM, HKDF-SHA256), the code that wrote the values
# deployments hold: [slot, plaintext, stored value].
KNOWN_MASTER_KEY = "known-answer-master-key-sealed-by-cryptography-42"
KNOWN_FINGERPRINT = "16a00355e692d6a1"
KNOWN: list[tuple[str, str, dict[str, Any]]] = [
    (
        "bindings/key_0123456789abcdef/openai",
        "sk-proj-known-answer-0001",
        {
            "v": 1,
            "kid": "16a00355e692d6a1",
            "nonce": "wy07YnySQFtegGfy",
            "ct": "coljAqedvAVoJyPRnJ7NCEyqSGT9N1Xy8Rriq5R5n3h2trrI3SNedCE",
        },
    ),
    (
        "agents/agt_0123456789abcdef",
        "ghp_é✓ agent secret",
        {
            "v": 1,
            "kid": "16a00355e692d6a1",
            "nonce": "WtimNiXhHR-CtUQ_",
            "ct": "8uEWpJFN73Bpnqd91KAt05bxQgLtV0WuE9kFrfrr5tVX2D6Ik0w",
        },
    ),
    (
        "bindings/key_0123456789abcdef/anthropic",
        "",
        {"v": 1, "kid": "16a00355e692d6a1", "nonce": "bOvlAmlUoiTfNHhL", "ct": "X4H0sUmVrzH9kDQGhpDJMg"},
    ),
]


@pytest.mark.parametrize(("slot", "plaintext", "sealed"), KNOWN)
def test_values_sealed_by_the_previous_library_unseal(
    slot: str, plaintext: str, sealed: dict[str, Any]
) -> None:
    vault = Vault(KNOWN_MASTER_KEY)
    assert vault.fingerprint == KNOWN_FINGERPRINT
    assert vault.unseal(sealed, slot) == plaintext


def test_a_new_value_has_the_stored_format_and_unseals() -> None:
    vault = Vault(KNOWN_MASTER_KEY)
    sealed = vault.seal("sk-new", "bindings/key_1/openai")
    assert sorted(sealed) == ["ct", "kid", "nonce", "v"]
    assert (sealed["v"], sealed["kid"]) == (1, KNOWN_FINGERPRINT)
    assert len(sealed["nonce"]) == 16  # 12 bytes, unpadded base64url
    assert len(sealed["ct"]) == 30  # 6 bytes of ciphertext and the 16-byte tag
    assert vault.unseal(json.loads(json.dumps(sealed)), "bindings/key_1/openai") == "sk-new"
    assert vault.seal("sk-new", "bindings/key_1/openai")["nonce"] != sealed["nonce"]


def test_a_wrong_master_key_is_named() -> None:
    slot, _, sealed = KNOWN[0]
    with pytest.raises(VaultError, match="encrypted with a different TREX_MASTER_KEY"):
        Vault("another-master-key-of-enough-characters").unseal(sealed, slot)


def _flip_last_char(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: {**s, "ct": _flip_last_char(s["ct"])},  # the tag
        lambda s: {**s, "ct": "A" + s["ct"][1:]},  # the ciphertext
        lambda s: {**s, "ct": s["ct"][:12]},  # shorter than a tag
        lambda s: {**s, "nonce": _flip_last_char(s["nonce"])},
        lambda s: {k: v for k, v in s.items() if k != "ct"},
    ],
)
def test_a_tampered_value_fails_authentication(damage: Any) -> None:
    slot, _, sealed = KNOWN[0]
    with pytest.raises(VaultError, match="failed authentication"):
        Vault(KNOWN_MASTER_KEY).unseal(damage(sealed), slot)


def test_a_value_moved_to_another_slot_fails_authentication() -> None:
    _, _, sealed = KNOWN[0]
    with pytest.raises(VaultError, match="failed authentication"):
        Vault(KNOWN_MASTER_KEY).unseal(sealed, "bindings/key_0123456789abcdef/anthropic")


async def test_a_binding_stored_by_the_previous_library_is_served() -> None:
    slot, plaintext, sealed = KNOWN[0]
    kv = MemoryKV()
    await kv.put(slot, json.dumps(sealed).encode())
    assert (
        await KeyStore(kv, Vault(KNOWN_MASTER_KEY)).provider_key("key_0123456789abcdef", "openai")
        == plaintext
    )
    wrong = KeyStore(kv, Vault("another-master-key-of-enough-characters"))
    with pytest.raises(
        MasterKeyError, match="Cannot decrypt the bound openai key: this secret was encrypted"
    ):
        await wrong.provider_key("key_0123456789abcdef", "openai")
