from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.money import ISO_4217, MAX_AMOUNT, Money, MoneyError, exponent, format_money

currencies = st.sampled_from(sorted(ISO_4217))
amounts = st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT)


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [("12.34 EUR", 1234, "EUR"), ("100 JPY", 100, "JPY"), ("1.234 BHD", 1234, "BHD"),
     ("0.01 usd", 1, "USD"), ("12.3 EUR", 1230, "EUR"), ("-5.00 GBP", -500, "GBP")],
)
def test_parse_examples(text: str, amount: int, currency: str) -> None:
    assert Money.parse(text) == Money(amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1234, "EUR", "12.34 EUR"), (5, "EUR", "0.05 EUR"), (100, "JPY", "100 JPY"),
     (1234, "BHD", "1.234 BHD"), (-1, "USD", "-0.01 USD"), (0, "EUR", "0.00 EUR")],
)
def test_format_examples(amount: int, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(
    "text", ["12.345 EUR", "1.5 JPY", "12,34 EUR", "EUR 12", "12 EURO", "12 XXX", "", "1e3 EUR", "12.34"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(MoneyError):
        Money.parse(text)


@pytest.mark.parametrize("amount", [12.5, 12.0, "12", True, None])
def test_amount_must_be_int(amount: object) -> None:
    with pytest.raises(MoneyError, match="integer"):
        Money(amount, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["eur", "XXX", "EU", ""])
def test_currency_must_be_known_upper_case(code: str) -> None:
    with pytest.raises(MoneyError, match="currency"):
        Money(1, code)


def test_exponents_from_the_table() -> None:
    assert (exponent("EUR"), exponent("JPY"), exponent("BHD"), exponent("CLP")) == (2, 0, 3, 0)
    with pytest.raises(MoneyError):
        exponent("ZZZ")


@given(amounts, currencies)
def test_format_parse_round_trip(amount: int, currency: str) -> None:
    money = Money(amount, currency)
    assert Money.parse(money.format()) == money


@given(amounts, currencies)
def test_format_has_exactly_the_currency_decimals(amount: int, currency: str) -> None:
    number = format_money(amount, currency).split()[0]
    decimals = len(number.split(".")[1]) if "." in number else 0
    assert decimals == ISO_4217[currency]
    assert Decimal(number).scaleb(ISO_4217[currency]) == amount
