"""Checks that a class offers every method of a Protocol with the same parameters, so a test
double (or the real daemon) cannot drift from the interface it stands for."""

from __future__ import annotations

import inspect


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")}


def assert_implements(cls: type, protocol: type) -> None:
    for name, wanted in protocol_methods(protocol).items():
        member = getattr(cls, name, None)
        assert callable(member), f"{cls.__name__} lacks {protocol.__name__}.{name}"
        got = inspect.signature(member)
        assert list(got.parameters) == list(wanted.parameters), (
            f"{cls.__name__}.{name}{got} does not match {protocol.__name__}.{name}{wanted}")
