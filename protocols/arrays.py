"""Numpy arrays inside the JSON wire records (base64 of the raw bytes, with dtype and shape)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from protocols.errors import ContractError

WIRE_DTYPES = ("uint16", "float16", "float32")  # bf16 travels as its raw uint16 bits
MAX_ARRAY_BYTES = 400 * 1024 * 1024


def to_wire(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in WIRE_DTYPES:
        raise ContractError(f"array dtype must be one of {WIRE_DTYPES}, got {array.dtype.name}")
    return {"dtype": array.dtype.name, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


def check_wire(where: str, value: Any) -> None:
    """Raise ContractError unless `value` is a well-formed wire array."""
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "b64"}:
        raise ContractError(f"{where}: expected an array {{dtype, shape, b64}}, got {str(value)[:80]!r}")
    if value["dtype"] not in WIRE_DTYPES:
        raise ContractError(f"{where}: array dtype must be one of {WIRE_DTYPES}, got {value['dtype']!r}")
    shape = value["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ContractError(f"{where}: array shape must be a list of sizes, got {shape!r}")
    if not isinstance(value["b64"], str):
        raise ContractError(f"{where}: array data must be base64 text")
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(value["dtype"]).itemsize
    if nbytes > MAX_ARRAY_BYTES or len(value["b64"]) != 4 * ((nbytes + 2) // 3):
        raise ContractError(f"{where}: array data does not match dtype {value['dtype']} and shape {shape}")


def from_wire(value: dict[str, Any]) -> np.ndarray:
    check_wire("array", value)
    data = base64.b64decode(value["b64"], validate=True)
    return np.frombuffer(data, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
