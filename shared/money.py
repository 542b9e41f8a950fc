"""Money as integer minor units, never floats: the ISO 4217 table (each currency's
exponent: JPY 0, EUR 2, BHD 3) and the annotated types every model uses for amounts and
currencies, so their rules are written once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, Field

# ISO 4217 active codes -> minor unit exponent (ISO 4217 amendment 176+).
ISO_4217: dict[str, int] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2,
    "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2,
    "BOB": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2, "CAD": 2,
    "CDF": 2, "CHF": 2, "CLP": 0, "CNY": 2, "COP": 2, "CRC": 2, "CUP": 2, "CVE": 2,
    "CZK": 2, "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2,
    "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2,
    "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2,
    "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0,
    "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2,
    "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2,
    "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2,
    "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2,
    "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0,
    "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2,
    "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2,
    "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2,
    "UAH": 2, "UGX": 0, "USD": 2, "UYU": 2, "UYW": 4, "UZS": 2, "VED": 2, "VES": 2,
    "VND": 0, "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2, "XCG": 2, "XOF": 0, "XPF": 0,
    "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
}  # fmt: skip

# Largest amount we accept, in minor units: fits a PostgreSQL bigint and a BSON int64
# with headroom for sums in statistics.
MAX_AMOUNT = 10**15

# What an OpenAPI document says of a currency field: exactly the codes the server accepts.
CURRENCY_SCHEMA: dict[str, object] = {"enum": sorted(ISO_4217)}

_MONEY_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Za-z]{3})\s*$")


class MoneyError(ValueError):
    """A malformed amount or an unknown currency."""


def exponent(currency: str) -> int:
    """Minor-unit digits of ``currency`` (an upper-case ISO 4217 code)."""
    try:
        return ISO_4217[currency]
    except KeyError:
        raise MoneyError(f"unknown currency {currency!r}: expected an ISO 4217 code such as EUR") from None


def validate_currency(code: str) -> str:
    """Return the code if it is a known upper-case ISO 4217 code, else raise."""
    if not isinstance(code, str) or code != code.upper() or code not in ISO_4217:
        raise MoneyError(f"unknown currency {code!r}: expected an upper-case ISO 4217 code such as EUR")
    return code


# A payment amount: a positive whole number of minor units, at most MAX_AMOUNT; strict, so
# neither "12" nor True nor 12.0 passes (an HTTP body may send 12.0: see http/schemas.py).
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)]
# An upper-case ISO 4217 code: CurrencyCode checks it, Currency also lists the codes in its
# JSON Schema (what the OpenAPI documents show).
CurrencyCode = Annotated[str, AfterValidator(validate_currency)]
Currency = Annotated[CurrencyCode, Field(json_schema_extra=CURRENCY_SCHEMA)]


@dataclass(frozen=True, slots=True)
class Money:
    amount: int  # minor units
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise MoneyError(f"amount must be an integer number of minor units, got {self.amount!r}")
        validate_currency(self.currency)

    @classmethod
    def parse(cls, text: str) -> Money:
        """``"12.34 EUR"`` -> ``Money(1234, "EUR")``. Rejects more decimals than the currency has."""
        match = _MONEY_RE.match(text)
        if not match:
            raise MoneyError(f"cannot parse money {text!r}: expected '<decimal> <CURRENCY>', e.g. '12.34 EUR'")
        number, currency = match.group(1), match.group(2).upper()
        exp = exponent(currency)
        try:
            value = Decimal(number)
        except InvalidOperation:  # pragma: no cover - the regex already guarantees a decimal
            raise MoneyError(f"cannot parse amount {number!r}") from None
        scaled = value.scaleb(exp)
        if scaled != scaled.to_integral_value():
            raise MoneyError(f"{currency} has {exp} decimal places; {number!r} has more")
        return cls(int(scaled), currency)

    def format(self) -> str:
        """``Money(1234, "EUR")`` -> ``"12.34 EUR"`` (exactly as many decimals as the currency)."""
        return f"{to_decimal(self.amount, self.currency)} {self.currency}"

    def __str__(self) -> str:
        return self.format()


def to_decimal(amount: int, currency: str) -> Decimal:
    """Minor units -> a Decimal in major units with the currency's exponent (exact)."""
    exp = exponent(currency)
    return Decimal(amount).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))


def format_money(amount: int, currency: str) -> str:
    return Money(amount, currency).format()
