"""The budget gate: before a metered request goes upstream, ask the ledger (halton_meter/budgets/ledger.py)
whether a `block` budget refuses it; if so, answer the client with the provider's own 429 shape and never
contact the provider.

Only billable endpoints are checked (not token counting, not model lists). Money budgets look only at
calls billed per token; plan budgets (`plan_window`) at every call of the account, subscription logins
included: that is what uses a plan's windows. The call's scope values are what is known when its request
arrives: provider, model asked for, key fingerprint, tool, and — once the connection's process lookup has
finished, which the core waits up to 0.25 s for on a connection's first request — project and branch. A
budget scoped to a project therefore cannot refuse a call whose project is not known yet; it passes and
counts when its row lands (docs/budgets.md says so).

The reservation is an estimate of what the call may cost: its `max_tokens` (4,096 when the request names
none) at the model's output price plus a quarter of the request's bytes as input tokens at the input
price, priced as any call is (`Pricer`). It is released when the call's row commits.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from halton_meter.budget_config import usd
from halton_meter.budgets.ledger import Ledger, Refusal
from halton_meter.core.pipeline import CallPipeline
from halton_meter.types import BILLING_API, CallRecord

if TYPE_CHECKING:
    from halton_meter.core.link import RemoteLedger

DEFAULT_OUTPUT_ESTIMATE = 4096
ROLLING_RETRY_SECONDS = 300
"""`retry-after` for a rolling budget: its spend falls as calls age out; check again in 5 minutes."""
ERROR_TYPE = "budget_exceeded"
Decision = tuple[int, dict[str, str], bytes] | None


class BudgetGate:
    def __init__(self, ledger: Ledger | RemoteLedger, price: Callable[[CallRecord], int | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.price = price
        self.clock = clock
        self.refused = 0

    def check(self, call: CallPipeline, body_size: int, dims: dict[str, str | None]) -> Decision | Awaitable[Decision]:
        """The refusal to send instead of forwarding the call, or None to let it go (reserved). In a core
        worker, an awaitable of that: the question goes to the first core's ledger (`core/link.py`)."""
        if not self.ledger.blocking or not call.endpoint.billable:
            return None
        per_token = (call.facts.billing or call.provider.billing) == BILLING_API
        # A subscription call spends no money (money budgets let it be) but uses its plan's windows.
        estimate = self._estimate(call, body_size) if per_token else 0
        if isinstance(self.ledger, Ledger):
            return self._answer(call, self.ledger.admit(call.record_id, dims, estimate, money=per_token))
        return self._ask(self.ledger, call, dims, estimate, per_token)  # a core worker: the first core decides

    async def _ask(self, ledger: RemoteLedger, call: CallPipeline, dims: dict[str, str | None], estimate: int,
                   money: bool) -> Decision:
        return self._answer(call, await ledger.admit(call.record_id, dims, estimate, money=money))

    def _answer(self, call: CallPipeline, refusal: Refusal | None) -> Decision:
        if refusal is None:
            return None
        self.refused += 1
        call.refused_by = refusal.budget.name
        retry_after = self._retry_after(refusal)
        status, headers, body = call.provider.refusal(message(refusal), retry_after)
        return status, {**headers, "retry-after": str(retry_after), "x-should-retry": "false"}, body

    def _estimate(self, call: CallPipeline, body_size: int) -> int:
        probe = CallRecord(
            id=call.record_id, started_at=call.started_at, provider=call.provider.name,
            endpoint_kind=call.endpoint.kind, host=call.host, method=call.method, path=call.bare_path,
            model=call.facts.model_requested, model_requested=call.facts.model_requested, billable=True,
            complete=True, usage_reported=True, input_tokens=body_size // 4,
            output_tokens=call.facts.max_output_tokens or DEFAULT_OUTPUT_ESTIMATE,
            price_provider_id=call.facts.price_provider_id or call.provider.price_provider_id,
        )
        try:
            return self.price(probe) or 0
        except Exception:  # an unpriceable model reserves nothing: its calls count when they land
            return 0

    def _retry_after(self, refusal: Refusal) -> int:
        if refusal.period_end is None:
            return ROLLING_RETRY_SECONDS
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        return max(1, int((refusal.period_end - now).total_seconds()) + 1)


def message(refusal: Refusal) -> str:
    budget = refusal.budget
    if budget.is_plan and refusal.utilization is not None and budget.limit_plan is not None:
        return (f"Halton Meter: budget {budget.name} reached (the {budget.plan_window} plan window is at "
                f"{refusal.utilization * 100:.0f} %, its limit {budget.limit_plan * 100:.0f} %). The call was not "
                f"sent. `halton-meter budgets override {budget.name} --for 1h` lets calls through.")
    period = "in the last " + budget.period_label.removeprefix("rolling ") if budget.rolling_seconds else \
        f"this {budget.period}"
    return (f"Halton Meter: budget {budget.name} reached (${usd(refusal.spent)} of ${usd(budget.limit_nanos)} "
            f"{period}). The call was not sent. `halton-meter budgets override {budget.name} --for 1h` lets "
            "calls through.")
