"""Reference prices of well-known US large-cap tickers, so the simulated feed looks like a market.

A dashboard fed by the simulated source is only believable when AAPL trades near where people expect
it, not at 13 dollars: the simulated source starts each symbol of this table at its reference price
(give or take a few percent) and lists these tickers first when it makes up symbols.

The prices are illustrative reference levels, round numbers of late-2025 magnitude; they are not market
data, not a quote of any date, and are never updated from a market. Tickers with a dot (BRK.B) and
single-letter tickers (V, T, C, F) are left out, so every name here is 2 to 5 capital letters like the
made-up names that follow them. Order: roughly the largest companies first.
"""

from __future__ import annotations

# Ticker -> reference price in whole US dollars, insertion-ordered. Treat it as read-only.
REFERENCE_PRICES: dict[str, int] = {
    "NVDA": 180, "AAPL": 230, "MSFT": 420, "GOOGL": 250, "AMZN": 220, "META": 700, "AVGO": 340,
    "TSLA": 330, "JPM": 300, "WMT": 100, "LLY": 800, "ORCL": 250, "MA": 570, "NFLX": 110, "XOM": 115,
    "COST": 920, "JNJ": 190, "HD": 380, "PG": 150, "BAC": 50, "ABBV": 220, "KO": 70, "PLTR": 180,
    "UNH": 330, "CVX": 155, "GE": 300, "CSCO": 70, "WFC": 85, "AMD": 230, "IBM": 290, "PM": 155,
    "MS": 160, "GS": 780, "ABT": 130, "CRM": 240, "AXP": 350, "MCD": 300, "LIN": 450, "MRK": 85,
    "DIS": 115, "PEP": 145, "UBER": 95, "RTX": 165, "CAT": 520, "VZ": 40, "INTU": 660, "NOW": 900,
    "TMO": 520, "BKNG": 5200, "QCOM": 165, "BLK": 1100, "SCHW": 95, "AMGN": 300, "TXN": 170,
    "ISRG": 530, "SPGI": 500, "ACN": 250, "NEE": 80, "BA": 210, "GILD": 120, "ADBE": 340, "PFE": 25,
    "LOW": 240, "HON": 210, "DHR": 210, "UNP": 230, "COF": 220, "AMAT": 200, "DE": 480, "LMT": 480,
    "MDT": 95, "CMCSA": 30, "BMY": 45, "MO": 60, "SO": 90, "DUK": 120, "MDLZ": 60, "GD": 330, "COP": 90,
    "INTC": 35, "CL": 80, "MMM": 155, "USB": 48, "EMR": 130, "FDX": 240, "UPS": 90, "TGT": 95, "NKE": 65,
    "SBUX": 85, "GM": 60, "CVS": 75, "KHC": 26, "MET": 80, "AIG": 80, "BK": 105, "SPG": 170, "AMT": 190,
    "PYPL": 70, "MU": 200, "ADP": 300, "TMUS": 220,
}  # fmt: skip
