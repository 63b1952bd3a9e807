"""Secrets Manager reads, cached: :class:`SecretsManagerSecrets`.

What the functions used Powertools' ``parameters.SecretsProvider`` for (``get(name, max_age=…)``: one
``GetSecretValue`` call, the value kept for ``max_age`` seconds), without its import of boto3. The secret's current
version is read (``AWSCURRENT``, GetSecretValue's default when neither ``VersionId`` nor ``VersionStage`` is given:
https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html); its value is
``SecretString``, or ``SecretBinary`` for a secret stored as binary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class SecretsManagerSecrets:
    """Secret values by name, each cached for the ``max_age`` its reader asks for.

    Parameters
    ----------
    client
        A Secrets Manager client (``faceswap.aws.clients.client("secretsmanager")``).
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, client: SecretsManagerClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._cache: dict[str, tuple[float, str | bytes]] = {}

    def get(self, name: str, *, max_age: int) -> str | bytes:
        """The secret's current value: from the cache if read less than ``max_age`` seconds ago, else from
        Secrets Manager (and cached, unless ``max_age`` is 0 or less).

        Parameters
        ----------
        name
            The secret's name or ARN.
        max_age
            Seconds a value read is reused.

        Returns
        -------
        str or bytes
            ``SecretString``, or ``SecretBinary`` for a binary secret.

        Raises
        ------
        botocore.exceptions.ClientError
            As Secrets Manager answered: ``ResourceNotFoundException`` (no such secret), ``AccessDeniedException``,
            ``ThrottlingException`` …; nothing is cached.
        botocore.exceptions.BotoCoreError
            The request could not be made (network, credentials).
        """
        cached = self._cache.get(name)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        response = self._client.get_secret_value(SecretId=name)
        value = response["SecretString"] if "SecretString" in response else response["SecretBinary"]
        if max_age > 0:
            self._cache[name] = (now + max_age, value)
        return value
