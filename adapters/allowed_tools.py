"""OpenAI's `tool_choice: {"type": "allowed_tools", …}` for a provider without it: only the allowed tools.

The choice restricts the model to some of the declared tools (`mode` `auto`: it may call one of them or
answer; `required`: it must call one of them) while the request keeps declaring them all, so OpenAI's prompt
cache keeps hitting. A provider with no such choice (Claude, and any OpenAI-compatible server) is sent only
the allowed tools, with `auto` or `required` (Claude's `any`): the model can call nothing else.

Chat nests the choice under `allowed_tools` and names a function as `{"type": "function", "function":
{"name": …}}`; Responses puts `mode` and `tools` on the choice itself and names it `{"type": "function",
"name": …}`.
"""

from __future__ import annotations

from typing import Any, Literal, NoReturn

from .base import Tool, ToolChoice, TranslationError

__all__ = ["restrict"]


def _fail(message: str, param: str) -> NoReturn:
    raise TranslationError(message, param)


def restrict(spec: Any, where: str, tools: list[Tool], *, chat: bool) -> tuple[list[Tool], ToolChoice]:
    """The declared `tools` the choice `spec` (found at `where`, the client's field) allows, in their declared
    order, and the choice that goes with them. Raises `TranslationError` naming the field for a malformed
    choice or one that allows a tool the request does not declare."""
    if not isinstance(spec, dict):
        _fail(f"`{where}` must be an object with `mode` and `tools`.", where)
    mode = spec.get("mode")
    if mode != "auto" and mode != "required":
        _fail(f'`{where}.mode` must be "auto" or "required".', f"{where}.mode")
    listed = spec.get("tools")
    if not isinstance(listed, list):
        _fail(f"`{where}.tools` must be an array of tools.", f"{where}.tools")
    declared = {t.name for t in tools}
    allowed: set[str] = set()
    for i, entry in enumerate(listed):
        param = f"{where}.tools[{i}]"
        if not isinstance(entry, dict) or entry.get("type") != "function":
            _fail(f"`{param}` must be a function tool for this model.", f"{param}.type")
        named = entry.get("function") if chat else entry
        name = named.get("name") if isinstance(named, dict) else None
        name_param = f"{param}.function.name" if chat else f"{param}.name"
        if not isinstance(name, str) or not name:
            _fail(f"`{name_param}` must be a non-empty string.", name_param)
        if name not in declared:
            _fail(f"`{name_param}`: no tool named {name!r} is declared in `tools`.", name_param)
        allowed.add(name)
    if mode == "required" and not allowed:
        _fail(f"`{where}.tools`: mode required needs at least one tool to call.", f"{where}.tools")
    kind: Literal["auto", "required"] = mode
    return [t for t in tools if t.name in allowed], ToolChoice(type=kind)
