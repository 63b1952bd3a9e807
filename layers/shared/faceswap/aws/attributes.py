"""DynamoDB attribute values (``{"S": "abc"}``, ``{"N": "1.5"}``, ``{"M": {...}}`` …) to and from Python values.

The same mapping as boto3's ``boto3.dynamodb.types.TypeSerializer`` / ``TypeDeserializer`` (a unit test checks
them against each other), without importing boto3: importing ``boto3.dynamodb.types`` runs boto3's package, which
the functions otherwise do not need (they make their clients with botocore, :mod:`faceswap.aws.clients`). The one
difference: a binary value (``B``, ``BS``) reads back as ``bytes``, not boto3's ``Binary`` wrapper.

The types are DynamoDB's (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_AttributeValue.html): a
binary value is given to botocore as bytes (it does the base64 encoding); a number travels as a string of up to 38
significant digits, within DynamoDB's range:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html#HowItWorks.DataTypes.Number
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

NUMBERS = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])
"""DynamoDB's number range and precision; a value it cannot hold exactly raises (``decimal.Inexact`` …) rather
than being rounded (boto3's ``DYNAMODB_CONTEXT``)."""


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value.

    ``None`` → ``NULL``; ``bool`` → ``BOOL``; ``int``/``Decimal`` → ``N``; ``str`` → ``S``; ``bytes``/``bytearray``
    → ``B``; a set of numbers, strings or bytes → ``NS``/``SS``/``BS``; a mapping → ``M``; a list or tuple → ``L``
    (nested values converted alike).

    Raises
    ------
    TypeError
        A ``float`` (DynamoDB numbers are decimals: convert with ``Decimal(str(x))``), an infinite or NaN number, a
        set of mixed types, or any other type.
    decimal.Inexact, decimal.Rounded, decimal.Overflow, decimal.Underflow
        A number DynamoDB cannot store exactly (more than 38 significant digits, or out of its range).
    """
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": value}
    if isinstance(value, Set):
        # An empty set passes the first test, as in boto3 (DynamoDB refuses empty sets either way).
        if all(_is_number(v) for v in value):
            return {"NS": [_number(v) for v in value]}
        if all(isinstance(v, str) for v in value):
            return {"SS": list(value)}
        if all(isinstance(v, bytes | bytearray) for v in value):
            return {"BS": list(value)}
    elif isinstance(value, Mapping):
        return {"M": {k: serialize(v) for k, v in value.items()}}
    elif isinstance(value, list | tuple):
        return {"L": [serialize(v) for v in value]}
    raise TypeError(f'Unsupported type "{type(value)}" for value "{value}"')


def deserialize(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as a Python value: the inverse of :func:`serialize`.

    Numbers read back as ``Decimal``, sets as ``set``, binary values as ``bytes``, maps as ``dict``, lists as
    ``list``.

    Raises
    ------
    TypeError
        ``attribute`` is empty or its type is not one of DynamoDB's.
    """
    if not attribute:
        raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
    kind, value = next(iter(attribute.items()))
    match kind:
        case "NULL":
            return None
        case "BOOL" | "S":
            return value
        case "N":
            return NUMBERS.create_decimal(value)
        case "B":
            return bytes(value)
        case "NS":
            return {NUMBERS.create_decimal(v) for v in value}
        case "SS":
            return set(value)
        case "BS":
            return {bytes(v) for v in value}
        case "L":
            return [deserialize(v) for v in value]
        case "M":
            return {k: deserialize(v) for k, v in value.items()}
    raise TypeError(f"Dynamodb type {kind} is not supported")


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    return isinstance(value, int | Decimal)


def _number(value: int | Decimal) -> str:
    number = str(NUMBERS.create_decimal(value))
    if number in ("Infinity", "-Infinity", "NaN", "sNaN"):
        raise TypeError("Infinity and NaN not supported")
    return number
