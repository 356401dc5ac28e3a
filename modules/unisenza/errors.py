"""Exceptions raised by the Unisenza Plus client.

Every failure the client reports is a :class:`ClientError`; a failure caused by the
credentials (wrong password, unknown user, revoked session that a password login could
not recover, an unsupported challenge such as MFA) is the subclass
:class:`AuthenticationError`. Retrying an :class:`AuthenticationError` without a change of
credentials is pointless; any other :class:`ClientError` may be transient.
"""


class ClientError(Exception):
    """An operation of the Unisenza client failed (network, cloud reply, timeout, bad input)."""


class AuthenticationError(ClientError):
    """The cloud refused the credentials; retrying with the same ones will not help."""
