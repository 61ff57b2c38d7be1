"""Trader-desk figures from trades and the latest reference prices: pure pandas, no I/O.

Conventions (the page states them too):
- cash PnL: a sell earns ``+price × quantity``, a buy costs ``−price × quantity``;
- net position: MW bought − MW sold;
- VWAP: Σ price × quantity / Σ quantity, over all trades of the row, and per direction;
- the desk did better than the reference when it sold above it or bought below it:
  ``sell VWAP − reference > 0`` and ``buy VWAP − reference < 0`` are green;
- edge vs reference (EUR): Σ over sells (price − ref) × qty + Σ over buys (ref − price) × qty,
  positive = better than the reference; hours without a reference price add nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

TRADE_COLUMNS = ["deal_id", "trader_id", "direction", "price", "quantity", "delivery_day", "delivery_hour"]
REFERENCE_COLUMNS = ["delivery_day", "delivery_hour", "value", "last_update"]

ROW_KEYS = ["delivery_day", "trader_id", "delivery_hour"]
GREEN, RED = "green", "red"

SUMMARY_COLUMNS = [
    "trades", "mw_bought", "mw_sold", "net_mw", "vwap", "vwap_buy", "vwap_sell", "cash_pnl", "edge_vs_reference",
]
ROW_COLUMNS = ROW_KEYS + SUMMARY_COLUMNS[:7] + [
    "reference_price", "reference_unit", "reference_updated", "reference_age_seconds",
    "buy_vs_reference", "sell_vs_reference",
] + SUMMARY_COLUMNS[7:]


def better_than_reference(direction: str, price: float, reference: float | None) -> bool | None:
    """Did a trade (or a direction's VWAP) beat the reference? None when it cannot be told
    (no reference, no trades of that direction) or when it is exactly equal."""
    if reference is None or price is None or pd.isna(reference) or pd.isna(price) or price == reference:
        return None
    if direction == "sell":
        return price > reference
    if direction == "buy":
        return price < reference
    raise ValueError(f"direction must be 'buy' or 'sell', got {direction!r}")


def difference_colour(direction: Literal["buy", "sell"], difference: float | None) -> str | None:
    """Colour of ``VWAP − reference`` for one direction: green better, red worse."""
    if direction not in ("buy", "sell"):
        raise ValueError(f"direction must be 'buy' or 'sell', got {direction!r}")
    if difference is None or pd.isna(difference) or difference == 0:
        return None
    better = difference > 0 if direction == "sell" else difference < 0
    return GREEN if better else RED


def edge_colour(edge: float | None) -> str | None:
    if edge is None or pd.isna(edge) or edge == 0:
        return None
    return GREEN if edge > 0 else RED


def _check_columns(frame: pd.DataFrame, required: list[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack column(s) {', '.join(missing)}")


def prepare_trades(trades: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """Trades with numeric price/quantity, the reference price of their hour joined, and
    the per-trade amounts the summaries add up."""
    _check_columns(trades, TRADE_COLUMNS, "trades")
    _check_columns(references, REFERENCE_COLUMNS, "reference prices")
    unknown = sorted(set(trades["direction"]) - {"buy", "sell"})
    if unknown:
        raise ValueError(f"trades with unknown direction(s) {unknown}: expected 'buy' or 'sell'")
    t = trades.copy()
    t["price"] = pd.to_numeric(t["price"]).astype(float)
    t["quantity"] = pd.to_numeric(t["quantity"]).astype(float)
    t["delivery_day"] = pd.to_datetime(t["delivery_day"]).dt.date
    refs = references.copy()
    refs["delivery_day"] = pd.to_datetime(refs["delivery_day"]).dt.date
    refs["reference_price"] = pd.to_numeric(refs["value"]).astype(float)
    refs["reference_updated"] = pd.to_datetime(refs["last_update"], utc=True)
    refs["reference_unit"] = refs["unit"] if "unit" in refs.columns else ""
    # One reference per day+hour: the newest, should the caller pass history.
    refs = refs.sort_values("reference_updated").drop_duplicates(["delivery_day", "delivery_hour"], keep="last")
    t = t.merge(
        refs[["delivery_day", "delivery_hour", "reference_price", "reference_unit", "reference_updated"]],
        on=["delivery_day", "delivery_hour"], how="left",
    )
    is_buy = t["direction"] == "buy"
    notional = t["price"] * t["quantity"]
    t["buy_qty"] = np.where(is_buy, t["quantity"], 0.0)
    t["sell_qty"] = np.where(is_buy, 0.0, t["quantity"])
    t["buy_notional"] = np.where(is_buy, notional, 0.0)
    t["sell_notional"] = np.where(is_buy, 0.0, notional)
    t["cash"] = np.where(is_buy, -notional, notional)
    t["edge"] = np.where(is_buy, t["reference_price"] - t["price"], t["price"] - t["reference_price"]) * t["quantity"]
    return t


def _summarise(t: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = t.groupby(keys, sort=True)
    out = grouped.agg(
        trades=("deal_id", "count"),
        mw_bought=("buy_qty", "sum"),
        mw_sold=("sell_qty", "sum"),
        buy_notional=("buy_notional", "sum"),
        sell_notional=("sell_notional", "sum"),
        cash_pnl=("cash", "sum"),
    )
    # min_count=1: a row with no reference at all shows "no reference", not an edge of 0.
    out["edge_vs_reference"] = grouped["edge"].sum(min_count=1)
    out["net_mw"] = out["mw_bought"] - out["mw_sold"]
    volume = out["mw_bought"] + out["mw_sold"]
    out["vwap"] = (out["buy_notional"] + out["sell_notional"]) / volume.where(volume > 0)
    out["vwap_buy"] = out["buy_notional"] / out["mw_bought"].where(out["mw_bought"] > 0)
    out["vwap_sell"] = out["sell_notional"] / out["mw_sold"].where(out["mw_sold"] > 0)
    return out.reset_index()[keys + SUMMARY_COLUMNS]


def desk_rows(trades: pd.DataFrame, references: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """One row per (delivery day, trader, delivery hour), in that order."""
    if trades.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    t = prepare_trades(trades, references)
    rows = _summarise(t, ROW_KEYS)
    refs = t.groupby(["delivery_day", "delivery_hour"], sort=False).agg(
        reference_price=("reference_price", "first"),
        reference_unit=("reference_unit", "first"),
        reference_updated=("reference_updated", "first"),
    ).reset_index()
    rows = rows.merge(refs, on=["delivery_day", "delivery_hour"], how="left")
    now_ts = pd.Timestamp(now)
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    rows["reference_age_seconds"] = (now_ts - rows["reference_updated"]).dt.total_seconds()
    rows["buy_vs_reference"] = rows["vwap_buy"] - rows["reference_price"]
    rows["sell_vs_reference"] = rows["vwap_sell"] - rows["reference_price"]
    return rows[ROW_COLUMNS]


def trader_totals(trades: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """Per delivery day and trader, over all hours."""
    if trades.empty:
        return pd.DataFrame(columns=["delivery_day", "trader_id"] + SUMMARY_COLUMNS)
    return _summarise(prepare_trades(trades, references), ["delivery_day", "trader_id"])


def day_totals(trades: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """Per delivery day, over all traders and hours."""
    if trades.empty:
        return pd.DataFrame(columns=["delivery_day"] + SUMMARY_COLUMNS)
    return _summarise(prepare_trades(trades, references), ["delivery_day"])


def format_age(seconds: float | None) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 5 min"``; empty when unknown."""
    if seconds is None or pd.isna(seconds):
        return ""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
