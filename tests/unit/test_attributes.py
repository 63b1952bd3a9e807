"""DynamoDB attribute values: ``faceswap.aws.attributes`` maps values exactly as boto3's TypeSerializer and
TypeDeserializer do (the functions no longer import boto3; these tests still may)."""

from __future__ import annotations

import decimal
import random
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from faceswap.aws.attributes import deserialize, serialize

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    10**37,
    Decimal("0.1"),
    Decimal("-3.14159"),
    Decimal("1E+125"),
    Decimal("1E-129"),
    Decimal("12345678901234567890123456789012345678"),
    Decimal("92.53"),
    "",
    "job",
    "ünïcødé ✓",
    b"",
    b"\x00\xff bytes",
    bytearray(b"mutable"),
    {"a", "b", "c"},
    {1, 2, Decimal("3.5")},
    {b"x", b"y"},
    [],
    [1, "two", None, True, [Decimal("3.0")], {"four": 4}],
    (1, "tuple"),
    {},
    {"state": "SUCCEEDED", "attempts": 2, "error": None, "face_map": [{"reference": {"key": "k", "version": "v"}}]},
    {"nested": {"deeper": {"deepest": [{"x": [b"b", {"s"}]}]}}},
]


def _plain(value: Any) -> Any:
    """boto3 reads binary values back as ``Binary``; ours are ``bytes``."""
    if isinstance(value, Binary):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _sets_sorted(attribute: Any) -> Any:
    """An attribute value with its sets' members sorted (a set's order is not the serializer's to keep)."""
    if isinstance(attribute, dict):
        return {k: sorted(v, key=repr) if k in ("SS", "NS", "BS") else _sets_sorted(v) for k, v in attribute.items()}
    if isinstance(attribute, list):
        return [_sets_sorted(v) for v in attribute]
    return attribute


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "decimal", "str", "bytes", "sset", "nset"] + (["list", "map"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(10**30), 10**30)
    if kind == "decimal":
        return Decimal(rng.randint(-(10**20), 10**20)).scaleb(rng.randint(-20, 20))
    if kind == "str":
        return "".join(rng.choice("abcé✓ 01") for _ in range(rng.randint(0, 8)))
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 8))
    if kind == "sset":
        return {f"s{rng.randint(0, 99)}" for _ in range(rng.randint(1, 4))}
    if kind == "nset":
        return {rng.randint(-99, 99) for _ in range(rng.randint(1, 4))}
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_serializes_as_boto3_serializes_it_and_reads_back_as_boto3_reads_it(value: Any) -> None:
    ours, theirs = serialize(value), TypeSerializer().serialize(value)
    assert _sets_sorted(ours) == _sets_sorted(theirs)
    assert deserialize(ours) == _plain(TypeDeserializer().deserialize(theirs))


def test_many_random_values_match_boto3_and_round_trip() -> None:
    rng = random.Random(17)
    for _ in range(500):
        value = _random_value(rng)
        attribute = serialize(value)
        assert _sets_sorted(attribute) == _sets_sorted(TypeSerializer().serialize(value))
        assert deserialize(attribute) == _plain(TypeDeserializer().deserialize(attribute))


def test_numbers_read_back_as_decimals_and_tuples_as_lists() -> None:
    assert deserialize(serialize(7)) == Decimal(7) and isinstance(deserialize(serialize(7)), Decimal)
    assert deserialize(serialize((1, "a"))) == [Decimal(1), "a"]
    assert deserialize({"B": b"raw"}) == b"raw" and deserialize({"BS": [b"a"]}) == {b"a"}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1.5, TypeError),  # floats are refused, as boto3 does: Decimal(str(x)) keeps what was meant
        ({"similarity": 0.25}, TypeError),
        (Decimal("NaN"), TypeError),
        (Decimal("Infinity"), TypeError),
        (Decimal("1234567890123456789012345678901234567891"), decimal.Inexact),  # 40 significant digits
        ({1, "mixed"}, TypeError),
        (object(), TypeError),
    ],
    ids=repr,
)
def test_a_value_dynamodb_cannot_hold_is_refused_as_boto3_refuses_it(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        TypeSerializer().serialize(value)
    with pytest.raises(error):
        serialize(value)


@pytest.mark.parametrize("attribute", [{}, {"X": "1"}], ids=repr)
def test_an_attribute_of_no_dynamodb_type_is_refused(attribute: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        deserialize(attribute)
