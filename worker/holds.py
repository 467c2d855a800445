"""Compute Credits holds: what a request on credits may cost at most, set aside before it goes upstream.

A request's cost is known only once its usage is reconciled, after the response. Debited only then, requests
admitted together could each find the balance positive and together take it below zero. So a request that
draws on credits first holds its most possible cost: its optimized input tokens at the model's input price
plus its output cap (`max_tokens`, `max_completion_tokens` or `max_output_tokens`, at most the model's catalog
maximum; without one, what the upstream is sent — `DEFAULT_MAX_TOKENS` for Anthropic — else the catalog
maximum, else `DEFAULT_HOLD_OUTPUT_TOKENS`) at its output price, for each of a chat request's `n` choices.
What a key can spend is its balance less every hold of its requests in flight, on any instance sharing the
KV; a hold it cannot cover is a 402.

Holds are counters in the KV, `credits_held/<key id>/<hour>`: a hold adds to the current hour's counter, and
the value the increment returns (with the previous hour's counter and the balance, read in the same round
trip) says whether it fits, so of two requests racing for the last dollar the later sees the earlier's hold.
When the request's usage is reconciled, its hold is released and its actual cost debited in one charge batch,
applied at most once (`accounting/charges.py`). A request that fails upstream or is cut off releases its hold
the same way (it is reconciled too, a failure at no cost); one refused before its usage event begins (a bad
option, a storage quota) releases it at once (`Quotas.give_back`). A hold is applied at most once, under a
token of its own: one whose outcome is unknown (its Redis reply lost: the request is a 503) is sent again
under that token once Redis answers, then released, with the plan charges. An hour's counter is read
during that hour and the next, and expires after them: the holds of an instance that died are gone after one
to two hours, and a request still running by then no longer holds anything.

Prices are USD per million tokens, balances micro-dollars: tokens times price is micro-dollars.
"""

from __future__ import annotations

import dataclasses
import math

from kv.batching import Increment

HOLD_WINDOW_SECONDS = 3600
"""A hold counts in its hour's counter, read during that hour and the next."""
HOLD_TTL = 2 * HOLD_WINDOW_SECONDS + 60
"""An hour's counter outlives the two hours it is read in, whenever in its hour it was created."""
HOLD_TOKEN_TTL = 900
"""How long the KV remembers that a hold was applied: a hold whose outcome is unknown is sent again under its
token within that time (applied only if it was lost) and then released. Sent again later (a longer outage),
it may be applied twice and released once: it then lapses with its hour's counter, as before; it is never
released more than it was held."""
DEFAULT_HOLD_OUTPUT_TOKENS = 32_768
"""The output held for a model outside the catalog when the request sets no output cap."""


def counters(key_id: str, now: float) -> tuple[str, str]:
    """The key's hold counters read at `now`: this hour's (where a hold goes) and the previous hour's."""
    hour = int(now) // HOLD_WINDOW_SECONDS
    return f"credits_held/{key_id}/{hour}", f"credits_held/{key_id}/{hour - 1}"


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """One request's hold: where it was added and how much (micro-dollars)."""

    counter: str
    micro: int

    def release(self) -> Increment:
        return (self.counter, -self.micro, HOLD_TTL)


@dataclasses.dataclass(frozen=True, slots=True)
class Estimate:
    """What a request can cost at most: its input at the input price, its output cap at the output price."""

    input_tokens: int
    output_tokens: int
    output_field: str
    """The request field that caps the output (named in a 402: a lower value may fit)."""
    input_price: float
    """USD per 1M tokens; both 0 for a model without a known price, which holds nothing."""
    output_price: float
    choices: int = 1
    """A chat request's `n`: each of its choices may generate `output_tokens`, and OpenAI bills them all."""

    @property
    def micro(self) -> int:
        output = self.output_tokens * self.choices
        return math.ceil(self.input_tokens * self.input_price + output * self.output_price)

    def affordable_output(self, available_micro: int) -> int:
        """The most output tokens per choice `available_micro` pays for besides the input (0 when not even
        that fits): the value of the output cap that would fit."""
        left = available_micro - math.ceil(self.input_tokens * self.input_price)
        if left <= 0 or self.output_price <= 0:
            return 0
        return min(self.output_tokens, int(left / (self.output_price * self.choices)))

    def refusal(self, why: str, balance_micro: int, held_micro: int) -> str:
        """The 402's message: what the request needed, what is available, and what would fit."""
        available = max(0, balance_micro - held_micro)
        text = f"{why} on Compute Credits: this request can cost up to {usd(self.micro)} ("
        if self.input_price or self.output_price:
            text += f"{self.input_tokens:,} input tokens at ${self.input_price:g}/M"
            if self.output_tokens:  # an embeddings request has no output to name
                output = f"{self.output_tokens * self.choices:,} output tokens"
                if self.choices > 1:
                    output += f" ({self.choices} choices of {self.output_tokens:,})"
                text += f" and up to {output} at ${self.output_price:g}/M"
            text += "), "
        else:
            text += "the model has no known price, so it needs a positive balance), "
        text += f"and this key has {usd(available)} available ({usd(balance_micro)} balance"
        text += f", {usd(held_micro)} held by requests in flight)." if held_micro else ")."
        affordable = self.affordable_output(available)
        if affordable > 0:
            each = " per choice" if self.choices > 1 else ""
            text += (
                f" You requested up to {self.output_tokens:,} output tokens{each}, but can only afford "
                f"{affordable:,}: a lower `{self.output_field}` may fit."
            )
        return text


def usd(micro: int) -> str:
    """Micro-dollars as USD, to the cent at least and to the micro-dollar when it has them."""
    text = f"{abs(micro) / 1_000_000:,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    sign = "-" if micro < 0 else ""  # an overdrawn balance reads -$0.03, not $-0.03
    return f"{sign}${whole}.{cents.ljust(2, '0')}"
