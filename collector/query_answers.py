"""Answers of the commerce queries (``kpis`` and ``customers``) as pydantic models.

The routes declare them as their ``response_model``, so FastAPI checks each answer
against them and ``/openapi.json`` documents them. Money is a JSON number (the store
keeps 4 decimals); an amount is never added across currencies: each currency is a row of
its own, and '' is the currency of orders sent without one or without revenue.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

from pydantic import BaseModel, Field

from tracklane.store.analytics import Kpis
from tracklane.store.customers import Customers

_CURRENCY = "ISO 4217 code as sent, upper-cased; '' when the order had none or no revenue"


class CurrencyRevenue(BaseModel):
    currency: str = Field(description=_CURRENCY)
    orders: int = Field(ge=0)
    revenue: float
    aov: float = Field(description="revenue / orders, to 4 decimals")


class KpisAnswer(BaseModel):
    pageviews: int = Field(ge=0)
    visitors: int = Field(ge=0, description="persons, approximate (uniq, within about 2%)")
    visitors_exact: int = Field(ge=0, description="persons, exact")
    sessions: int = Field(ge=0)
    bounce_rate: float
    avg_duration_s: float
    views_per_visit: float
    order_events: list[str] = Field(description="the events counted as orders")
    orders: int = Field(ge=0, description="order events, every currency")
    currency: str | None = Field(
        description="the one currency of every order; null without orders or with several")
    revenue: float | None = Field(
        description="the orders' revenue when they are all in one currency (0 without "
                    "orders); null with several currencies: see currencies")
    aov: float | None = Field(
        description="average order value in that one currency; null without orders or "
                    "with several currencies")
    currencies: list[CurrencyRevenue] = Field(description="per currency, by code")
    converted: int = Field(ge=0, description="persons with an order")
    conversion_rate: float = Field(ge=0, le=1, description="converted / visitors_exact")

    @classmethod
    def of(cls, kpis: Kpis, order_events: list[str]) -> KpisAnswer:
        return cls.model_validate({**asdict(kpis), "order_events": order_events})


class Repurchase(BaseModel):
    customers: int = Field(ge=0, description="persons with at least one order")
    repeat_customers: int = Field(ge=0, description="persons with two or more orders")
    rate: float = Field(ge=0, le=1, description="repeat_customers / customers; 0 without any")


class CurrencyValue(BaseModel):
    currency: str = Field(description=_CURRENCY)
    customers: int = Field(ge=0, description="customers with an order in this currency")
    orders: int = Field(ge=0)
    revenue: float
    clv: float = Field(description="revenue / customers, to 4 decimals")


class ClvCohort(BaseModel):
    month: date = Field(description="first day of the month (in tz) of the first order")
    customers: int = Field(ge=0)
    orders: int = Field(ge=0, description="their orders so far, every currency")
    currencies: list[CurrencyValue]


class Clv(BaseModel):
    customers: int = Field(ge=0, description="every customer with an order before `to`")
    orders: int = Field(ge=0)
    currencies: list[CurrencyValue] = Field(description="lifetime value per currency")
    cohorts: list[ClvCohort] = Field(description="by month of first order, oldest first")


class Visitors(BaseModel):
    visitors: int = Field(ge=0, description="persons with a counted event in the range")
    new: int = Field(ge=0, description="first counted event ever in the range")
    returning: int = Field(ge=0, description="first seen before `from`")


class TimeToFirstOrder(BaseModel):
    customers: int = Field(ge=0, description="customers whose first order is in the range")
    median_s: float | None = Field(
        description="exact median of first visit to first order, in seconds (an even "
                    "count takes the mean of the two middle values); null without customers")


class CustomersAnswer(BaseModel):
    order_events: list[str] = Field(description="the events counted as orders")
    tz: str = Field(description="the time zone of the cohort months")
    repurchase: Repurchase = Field(description="over the orders in [from, to)")
    repurchase_all_time: Repurchase = Field(description="over every order before `to`")
    clv: Clv = Field(description="customer lifetime value so far: every order before `to`")
    visitors: Visitors
    time_to_first_order: TimeToFirstOrder

    @classmethod
    def of(cls, got: Customers, order_events: list[str], tz: str) -> CustomersAnswer:
        return cls.model_validate({**asdict(got), "order_events": order_events, "tz": tz})


class RealtimePage(BaseModel):
    path: str
    visitors: int = Field(ge=0)
    pageviews: int = Field(ge=0)


class RealtimeAnswer(BaseModel):
    visitors: int = Field(ge=0, description="persons with an event in the window")
    pageviews: int = Field(ge=0)
    window_s: int = Field(description="the window: the last 5 minutes (and as far ahead, "
                                      "for clients whose clocks run fast)")
    pages: list[RealtimePage] = Field(description="the pages viewed, by visitors")
    as_of: str = Field(description="the collector's time the window ends at (ISO 8601)")


class PipelineAnswer(BaseModel):
    watermark_delay_s: float | None = Field(
        description="how far behind now the sink's watermark is: every event received "
                    "before it is stored; null before the sink first reports")
    lag: int | None = Field(description="records in Kafka not yet stored; null likewise")
    accepted_last_hour: int = Field(
        ge=0, description="this project's accepted events, from the collectors' per-minute "
                          "counts (written every few seconds: a crash loses the last seconds "
                          "of counts, never events)")
    rejected_last_hour: int = Field(ge=0, description="this project's rejected events, likewise")
    as_of: str
