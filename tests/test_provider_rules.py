"""Requests the gateway builds for a provider follow that provider's rules, so it does not refuse them.

- Claude models that take temperature or top_p but not both (Sonnet/Haiku 4.5 and on) get temperature only;
  Claude Opus 4.7, which takes no sampling parameters, gets none.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import GatewaySetup

HI: Any = [{"role": "user", "content": "hi"}]


def _sampling(sent: dict[str, Any]) -> dict[str, Any]:
    return {k: sent[k] for k in ("temperature", "top_p", "top_k") if k in sent}


def test_claude_gets_only_the_sampling_parameters_its_model_takes(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, temperature=0.7, top_p=0.9)
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.7}
    # A dated snapshot follows its model; top_p alone is kept.
    client.responses.create(model="claude-haiku-4-5-20251001", input="hi", temperature=0.5, top_p=0.8)
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.5}
    client.chat.completions.create(model="claude-haiku-4-5", messages=HI, top_p=0.8)
    assert _sampling(gateway.fake.last().json) == {"top_p": 0.8}
    client.chat.completions.create(
        model="claude-opus-4-7", messages=HI, temperature=0.2, top_p=0.9, extra_body={"top_k": 5}
    )
    assert _sampling(gateway.fake.last().json) == {}
    # A model that takes both still gets both.
    client.chat.completions.create(model="claude-3-7-sonnet-latest", messages=HI, temperature=0.2, top_p=0.9)
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.2, "top_p": 0.9}
