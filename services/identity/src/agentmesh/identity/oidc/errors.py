"""Problem types of OpenID Connect sign-in: one per way it can fail."""

from agentmesh.shared.errors import AppError, Conflict, NotFound


class ProviderNotFound(NotFound):
    type, title = "oidc-provider-not-found", "No such sign-in provider"


class ReturnUrlNotAllowed(AppError):
    status, type, title = 400, "return-url-not-allowed", "Return URL not allowed"


class InvalidState(AppError):
    """The ``state`` is missing, tampered with, expired, or not this browser's."""

    status, type, title = 400, "invalid-oidc-state", "Invalid sign-in state"


class CodeReplayed(AppError):
    status, type, title = 400, "oidc-code-replayed", "Authorization code already used"


class ProviderError(AppError):
    """The provider answered the callback with an error (the user declined, ...)."""

    status, type, title = 400, "oidc-provider-error", "The sign-in provider refused"


class CodeRejected(AppError):
    """The provider's token endpoint refused the authorization code."""

    status, type, title = 400, "oidc-code-rejected", "Authorization code refused"


class ProviderUnavailable(AppError):
    """The provider cannot be reached or answered nonsense (not identity's own outage)."""

    status, type, title = 502, "oidc-provider-unavailable", "Sign-in provider unavailable"


class InvalidIdToken(AppError):
    status, type, title = 401, "invalid-id-token", "ID token failed verification"


class EmailNotVerified(AppError):
    status, type, title = 403, "email-not-verified", "Email not verified"


class DomainNotAllowed(AppError):
    status, type, title = 403, "email-domain-not-allowed", "Email domain not allowed"


class InvalidLoginCode(AppError):
    status, type, title = 400, "invalid-login-code", "Invalid login code"


class IdentityNotLinked(NotFound):
    type, title = "identity-not-linked", "No such linked identity"


class LastSignInMethod(Conflict):
    type, title = "last-sign-in-method", "Last way to sign in"


class IdentityConflict(Conflict):
    type, title = "oidc-identity-conflict", "Already linked to another provider account"
