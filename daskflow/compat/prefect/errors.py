"""The one error of the Prefect layer: a Prefect 3 feature daskflow does not have."""

from __future__ import annotations

from daskflow import DaskflowError


class PrefectFeatureNotSupported(DaskflowError):
    """A Prefect 3 feature with no daskflow equivalent (deployments, work
    pools, blocks, the server's API, ...); the message names it and says what
    to do instead."""


def refuse(feature: str, why: str, instead: str) -> PrefectFeatureNotSupported:
    """The error for ``feature``: what it is, why daskflow has none, what to do.

    >>> str(refuse("flow.deploy()", "there is no server", "call the flow"))
    'flow.deploy() (Prefect 3) is not supported by daskflow.compat.prefect: there is no server; call the flow'
    """
    return PrefectFeatureNotSupported(
        f"{feature} (Prefect 3) is not supported by daskflow.compat.prefect: {why}; {instead}")


class Refused:
    """A name that exists in Prefect 3 and raises when used (called, or an
    attribute read), naming the feature; importing it works, so a module
    that imports it but never uses it still runs."""

    def __init__(self, feature: str, why: str, instead: str) -> None:
        self._args = (feature, why, instead)

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise refuse(*self._args)

    def __getattr__(self, name: str) -> None:
        if name.startswith("__"):
            raise AttributeError(name)
        raise refuse(*self._args)

    def __repr__(self) -> str:
        return f"<not supported: {self._args[0]}>"
