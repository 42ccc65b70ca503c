"""The inference gate: who is calling (authenticate), may they and can they pay (admit), what did it cost
(settle), and the usage row of a request turned away (refuse).

Money never overspends: ``admit`` reserves the worst-case cost with one conditional UpdateItem on the user
row (see isthmus.adapters.tenancy_ddb), or carves it out of this process's budget lease, itself taken
with such a write (isthmus.services.tenancy.budget_leases); ``settle`` moves the hold into spend with the real cost
and writes the usage row in one transaction keyed by the admission id (batched with other settlements by
isthmus.services.tenancy.settlements), so it is idempotent and cannot be half-done.

Keys and prices are cached a few seconds per process and refreshed in the background once stale
(isthmus.services.tenancy.hot_cache): in steady state no request waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from isthmus import auth, lifecycle, metrics
from isthmus.background import SingleFlight
from isthmus.errors import ApiError
from isthmus.observability import get_logger, get_metrics
from isthmus.ports.tenancy import Charge
from isthmus.services.tenancy import holds, hot_cache
from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.budget_leases import BudgetLeases, leases_enabled
from isthmus.services.tenancy.credentials import Credentials, Stores, call
from isthmus.services.tenancy.pricing import require_pricing, unpriced_error
from isthmus.services.tenancy.settlements import Settlement, SettlementWriter

if TYPE_CHECKING:
    from isthmus.services.inference.token_bounds import TokenBound

log = get_logger("gate")


class Principal(BaseModel):
    model_config = ConfigDict(defer_build=True)
    kind: Literal["anonymous", "master", "key"]
    key_id: str | None = None
    key_name: str | None = None
    user_id: str | None = None
    allowed_models: list[str] | None = None
    exclude_from_budget: bool = False
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    next_budget_reset_at: str | None = None


class Admission(BaseModel):
    model_config = ConfigDict(defer_build=True)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    principal: Principal
    model: str
    endpoint: str
    hold: Decimal = Decimal(0)
    price: dict[str, Any] | None = None
    counts_toward_budget: bool = False
    reserved: bool = False
    leased: bool = False  # the hold came out of this process's budget lease (no per-request counters)
    hold_record: str | None = None  # the hold's record in the holds table (its own, or its lease's)
    tokens_held: int = 0
    tokens_bound: int = 0  # prompt + output tokens the hold covers (what a warning about excess usage cites)
    admitted_at: str
    headers: dict[str, str] = Field(default_factory=dict)


# model_construct: validating here would build Principal's schema at import (~8 ms of a cold start here,
# with pydantic's plugin loader); these two are known-good constants.
ANONYMOUS = Principal.model_construct(kind="anonymous")
MASTER = Principal.model_construct(kind="master")


KEY_TOUCH_INTERVAL_S = 60.0  # last_used_at is written at most this often per key and process


class TenancyGate:
    def __init__(self, stores: Stores, creds: Credentials, clock: Callable[[], float] = time.time,
                 leases: bool | None = None,
                 dead_letter: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.stores, self.creds = stores, creds
        self.clock = clock
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._key_touched: dict[str, float] = {}
        self._refreshes = SingleFlight("cache")  # stale keys and prices, read again off the request path
        use_leases = leases_enabled() if leases is None else leases
        self.leases = BudgetLeases(self.stores.users, call) if use_leases else None
        self.settlements = SettlementWriter(self.stores.usage, self.stores.users, call, dead_letter=dead_letter)
        lifecycle.on_shutdown(self.close)

    async def close(self) -> None:
        """Write queued settlements and give unused budget leases back (the edge calls this at shutdown)."""
        await self.settlements.close()
        if self.leases is not None:
            await self.leases.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ------------------------------------------------------------------ authenticate
    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = auth.extract_token(headers)
        keyed = await self.creds.keyed()
        if token is None:
            if keyed:
                raise ApiError(401, "Missing API key", headers={"WWW-Authenticate": "Bearer"})
            return ANONYMOUS
        if keyed and await self.creds.is_master(token):
            return MASTER
        key_hash = auth.hash_key(token, await self.creds.pepper())
        cached, stale = hot_cache.principals.lookup(key_hash)
        if isinstance(cached, tuple) and not (keyed and cached[0].kind == "anonymous"):  # (cached while open)
            principal, expires_at = cached
            if expires_at and str(expires_at) <= m.iso(self._now()):
                raise ApiError(401, "API key has expired")
            if stale:
                self._refreshes.start(f"key:{key_hash}", self._relookup(key_hash, keyed))
            return principal
        principal, expires_at = await self._lookup(key_hash, keyed)
        # open mode: an unknown key is no key, and every SDK sends one (a placeholder): that answer is cached
        # too, or each such request would wait on a key-table read (ignored above once the gateway is keyed)
        hot_cache.principals.put(key_hash, (principal, expires_at))
        return principal

    async def _relookup(self, key_hash: str, keyed: bool) -> None:
        """A stale cached key read again off the request path; a key now refused leaves the cache, so the next
        request is refused with the reason."""
        try:
            principal, expires_at = await self._lookup(key_hash, keyed)
        except ApiError as exc:
            if exc.status in (401, 403):
                hot_cache.principals.drop(key_hash)
            return
        hot_cache.principals.put(key_hash, (principal, expires_at))

    async def _lookup(self, key_hash: str, keyed: bool) -> tuple[Principal, Any]:
        key = await call(self.stores.keys.find_by_hash, key_hash)
        if key is None:
            if not keyed:
                return ANONYMOUS, None  # LAN mode: SDKs insist on sending some key; an unknown one is no key
            raise ApiError(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if not key.get("is_active", True):
            raise ApiError(401, "API key is inactive")
        if key.get("expires_at") and str(key["expires_at"]) <= m.iso(self._now()):
            raise ApiError(401, "API key has expired")
        user_id = str(key.get("user_id") or "") or None
        user = await call(self.stores.users.get, user_id) if user_id else None
        if user is not None and (user.get("blocked") or user.get("deleted")):
            raise ApiError(403, f"User {user_id} is blocked")
        allowed = key.get("allowed_models")
        if allowed is None and user is not None:
            allowed = user.get("allowed_models")
        principal = Principal(kind="key", key_id=str(key["key_id"]), key_name=key.get("key_name"), user_id=user_id,
                              allowed_models=None if allowed is None else [str(a) for a in allowed],
                              exclude_from_budget=bool(key.get("exclude_from_budget", False)),
                              rpm_limit=_int(key.get("rpm_limit")), tpm_limit=_int(key.get("tpm_limit")),
                              next_budget_reset_at=(user or {}).get("next_budget_reset_at"))
        return principal, key.get("expires_at")

    async def principal_for_key(self, key_id: str) -> Principal:
        """The principal of a stored key, checked as :meth:`authenticate` checks a presented one: work done later
        on a key's behalf (a batch's lines) is refused once the key is revoked, expired or its user blocked."""
        key = await call(self.stores.keys.get, key_id)
        if key is None or not key.get("key_hash"):
            raise ApiError(401, "The API key that created this work no longer exists")
        principal, _ = await self._lookup(str(key["key_hash"]), True)
        return principal

    # ------------------------------------------------------------------ admit
    async def admit(self, principal: Principal, *, model: str, endpoint: str, input_tokens_estimate: int = 0,
                    max_output_tokens: int = 0, bound: Callable[[], Awaitable[TokenBound]] | None = None) -> Admission:
        """``input_tokens_estimate`` + ``max_output_tokens`` feed the tokens-per-minute limit, and the hold when
        no ``bound`` is given. ``bound`` (isthmus.services.inference.token_bounds) is the upper bound of what settlement
        can charge; it is awaited only when a hold is needed (a priced model, a principal whose spend counts),
        so open mode and free models never pay for a token count."""
        if not m.model_allowed(model, principal.allowed_models):
            raise ApiError(403, f"Model {model!r} is not allowed for this API key", code="model_not_allowed")
        now = self._now()
        tokens = max(0, input_tokens_estimate) + max(0, max_output_tokens)
        taken, headers = await self._rate_limit(principal, tokens, now)
        try:
            price = await self._price(model, now)
            if price is None and require_pricing():
                raise unpriced_error(model)
            counts = principal.kind == "key" and principal.user_id is not None and not principal.exclude_from_budget
            input_tokens, output_tokens = input_tokens_estimate, max_output_tokens
            if counts and bound is not None and m.needs_token_count(price):
                held = await bound()
                input_tokens, output_tokens = held.input_tokens, held.output_tokens
                tokens = input_tokens + output_tokens
            # a hold only for what counts (an anonymous, master or budget-exempt caller is never held)
            hold = m.worst_case(price, input_tokens=input_tokens, max_output_tokens=output_tokens) if counts \
                else Decimal(0)
            admission = Admission(principal=principal, model=model, endpoint=endpoint, hold=hold, price=price,
                                  counts_toward_budget=counts, admitted_at=m.iso(now), headers=headers,
                                  tokens_bound=max(0, input_tokens) + max(0, output_tokens))
            if counts and hold > 0:
                assert principal.user_id is not None
                await self._maybe_reset(principal, now)
                lease_record = await self.leases.acquire(principal.user_id, hold) if self.leases else None
                tag = None if lease_record else holds.hold_tag(admission.id)
                if lease_record:
                    admission.reserved = admission.leased = True
                    admission.hold_record = lease_record
                elif await call(self.stores.users.reserve, principal.user_id, hold, tokens, tag):
                    admission.reserved, admission.tokens_held = True, tokens
                    admission.hold_record = tag.record_id if tag else None
                else:
                    metrics.budget_refused(model)
                    raise ApiError(403, "Budget exceeded", code="budget_exceeded")
            else:
                admission.hold = Decimal(0)  # nothing held: free, unpriced or not gated
            return admission
        except BaseException:
            for bucket, amount in taken:
                await call(self.stores.ratelimits.give_back, bucket, amount)
            raise

    async def _price(self, model: str, now: datetime) -> dict[str, Any] | None:
        cached, stale = hot_cache.prices.lookup(model)
        if isinstance(cached, tuple):
            if stale:
                self._refreshes.start(f"price:{model}", self._reprice(model))
            return cached[0]
        return await self._reprice(model)

    async def _reprice(self, model: str) -> dict[str, Any] | None:
        price = await call(self.stores.pricing.effective, model, m.iso(self._now()))
        hot_cache.prices.put(model, (price,))  # "unpriced" is cached too: pricing writes clear the cache
        return price

    async def _rate_limit(self, principal: Principal, tokens: int,
                          now: datetime) -> tuple[list[tuple[str, int]], dict[str, str]]:
        if principal.kind != "key" or not (principal.rpm_limit or principal.tpm_limit):
            return [], {}
        epoch = now.timestamp()
        minute = int(epoch // 60)
        retry_after = str(max(1, math.ceil((minute + 1) * 60 - epoch)))
        expires = (minute + 2) * 60
        taken: list[tuple[str, int]] = []
        headers: dict[str, str] = {}
        for kind, limit, amount in (("requests", principal.rpm_limit, 1), ("tokens", principal.tpm_limit, tokens)):
            if not limit:
                continue
            bucket = f"{kind}#{principal.key_id}#{minute}"
            ok, count = await call(self.stores.ratelimits.take, bucket, amount, limit, expires)
            used = count if count is not None else limit
            headers[f"X-RateLimit-Limit-{kind.title()}"] = str(limit)
            headers[f"X-RateLimit-Remaining-{kind.title()}"] = str(max(0, limit - used))
            if not ok:
                for b, a in taken:
                    await call(self.stores.ratelimits.give_back, b, a)
                headers["Retry-After"] = retry_after
                metrics.rate_limited(kind)
                raise ApiError(429, f"Rate limit exceeded: {limit} {kind} per minute for this API key",
                               code="rate_limit_exceeded", headers=headers)
            taken.append((bucket, amount))
        return taken, headers

    async def _maybe_reset(self, principal: Principal, now: datetime) -> None:
        """Lazy budget reset: the first request after the period's end zeroes spend (one conditional write)."""
        due = principal.next_budget_reset_at
        if not due or str(due) > m.iso(now):
            return
        assert principal.user_id is not None
        for _ in range(3):
            user = await call(self.stores.users.get, principal.user_id)
            if user is None or not user.get("next_budget_reset_at") or str(user["next_budget_reset_at"]) > m.iso(now):
                return
            budget = await call(self.stores.budgets.get, str(user.get("budget_id"))) if user.get("budget_id") else None
            nxt = None
            if budget is not None:
                start = m.parse_when(str(user["next_budget_reset_at"]))
                nxt = m.next_reset(now, duration_sec=_int(budget.get("budget_duration_sec")),
                                   alignment=budget.get("reset_alignment"), started_at=start)
            if await call(self.stores.users.reset_period, user, now_iso=m.iso(now),
                          next_iso=None if nxt is None else m.iso(nxt)):
                log.info("budget reset", extra={"user_id": principal.user_id, "budget_id": user.get("budget_id")})
                return

    # ------------------------------------------------------------------ settle / refuse
    async def settle(self, admission: Admission, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                     status: str, status_code: int, latency_ms: int, backend: str, request_id: str,
                     detached: bool = False) -> None:
        """Reconcile once per admission (later calls are no-ops), shielded from the caller's cancellation.

        ``detached`` (a long-running edge, where the answer is already on its way): the settlement is queued for
        the next batch and this returns at once, without an await, so nothing can interrupt it half-way; a batch
        the store cannot take goes to the local spool (SettlementWriter). Otherwise (Lambda) it returns once the
        settlement is written."""
        if admission.id in self._settled:
            return
        settlement = self._settlement(admission, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                      cached_tokens=cached_tokens, status=status, status_code=status_code,
                                      latency_ms=latency_ms, backend=backend, request_id=request_id)
        if detached:
            self.settlements.submit(settlement)
            self._remember(admission.id)
            touch = self._key_touch(admission.principal.key_id)
            if touch is not None:
                self._refreshes.start(f"touch:{admission.principal.key_id}", touch)
            return
        await asyncio.shield(self._write(admission, settlement))

    async def _write(self, a: Admission, settlement: Settlement) -> None:
        await self.settlements.write(settlement)
        self._remember(a.id)
        touch = self._key_touch(a.principal.key_id)
        if touch is not None:
            await touch

    def _settlement(self, a: Admission, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                    status: str, status_code: int, latency_ms: int, backend: str, request_id: str) -> Settlement:
        cost = m.cost(a.price, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      cached_tokens=cached_tokens)
        unbilled = None
        if a.counts_toward_budget:  # spend never passes the budget: a hold is the most a request can be charged
            cost, over = m.capped(cost, a.hold if a.reserved else Decimal(0))
            if over > 0:
                unbilled = over
                self._report_unbilled(a, over, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                      request_id=request_id)
        row = self._row(a.principal, id=a.id, model=a.model, endpoint=a.endpoint, status=status,
                        status_code=status_code, request_id=request_id, provider=backend, cost=cost,
                        unbilled_cost=unbilled, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        cached_tokens=cached_tokens, latency_ms=latency_ms, counts_toward_budget=a.counts_toward_budget)
        user_id = a.principal.user_id if a.counts_toward_budget else None
        metrics.spend(a.model, cost)
        return Settlement(row, charge=Charge(
            user_id, cost=cost, hold=a.hold if a.reserved else Decimal(0), tokens_held=a.tokens_held,
            tokens_used=prompt_tokens + completion_tokens, requests_held=1 if a.reserved and not a.leased else 0,
            hold_record=a.hold_record if a.reserved else None, leased=a.leased) if user_id else None)

    def _key_touch(self, key_id: str | None) -> Coroutine[Any, Any, None] | None:
        """The key's last_used_at write when one is due: best effort and coarse (one write a minute per key),
        the money is settled without it."""
        if not key_id or time.monotonic() - self._key_touched.get(key_id, -KEY_TOUCH_INTERVAL_S) < KEY_TOUCH_INTERVAL_S:
            return None
        self._key_touched[key_id] = time.monotonic()
        if len(self._key_touched) > 10_000:
            self._key_touched.clear()

        async def touch() -> None:
            with contextlib.suppress(ApiError):
                await call(self.stores.keys.update, key_id, {"last_used_at": m.iso(self._now())})

        return touch()

    def _report_unbilled(self, a: Admission, over: Decimal, *, prompt_tokens: int, completion_tokens: int,
                         request_id: str) -> None:
        """A backend reported more than the bound held: the excess is not charged (the budget holds); say so."""
        log.warning("usage above the budget hold: charged the hold, the rest is unbilled",
                    extra={"model": a.model, "user_id": a.principal.user_id, "hold": str(a.hold),
                           "unbilled_cost": str(over), "prompt_tokens": prompt_tokens,
                           "completion_tokens": completion_tokens, "tokens_held": a.tokens_bound,
                           "admission_id": a.id, "request_id": request_id})
        metrics = get_metrics("gate")
        metrics.add_metric(name="UnbilledRequests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="UnbilledCostUSD", unit=MetricUnit.NoUnit, value=float(over))

    async def refuse(self, principal: Principal | None, *, model: str, endpoint: str, status_code: int,
                     request_id: str, reason: str) -> None:
        row = self._row(principal or ANONYMOUS, id=uuid.uuid4().hex, model=model, endpoint=endpoint,
                        status="refused", status_code=status_code, request_id=request_id, provider=None,
                        cost=Decimal(0), counts_toward_budget=False, error_message=reason[:500])
        await asyncio.shield(call(self.stores.usage.put, row))

    def _row(self, p: Principal, **fields: Any) -> dict[str, Any]:
        stamp = m.iso(self._now())
        row = {"timestamp": stamp, "day": stamp[:10], "api_key_id": p.key_id, "api_key_name": p.key_name,
               "user_id": p.user_id, "source": "gateway", "bulk_editable": False, "prompt_tokens": 0,
               "completion_tokens": 0, "cached_tokens": 0, **fields}
        return {k: v for k, v in row.items() if v is not None}

    def _remember(self, admission_id: str) -> None:
        self._settled[admission_id] = None
        while len(self._settled) > 10_000:
            self._settled.popitem(last=False)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
