"""Identity's problem types."""

from agentmesh.shared.errors import AppError, Conflict, Unauthorized


class EmailTaken(Conflict):
    type, title = "email-taken", "Email already registered"


class WeakPassword(AppError):
    status, type, title = 422, "weak-password", "Password too weak"


class InvalidCredentials(Unauthorized):
    type, title = "invalid-credentials", "Invalid credentials"


class AccountDeactivated(AppError):
    status, type, title = 403, "account-deactivated", "Account deactivated"


class TooManyAttempts(AppError):
    status, type, title = 429, "too-many-login-attempts", "Too many failed logins"


class InvalidRefreshToken(Unauthorized):
    type, title = "invalid-refresh-token", "Invalid refresh token"


class InvalidApiKey(Unauthorized):
    type, title = "invalid-api-key", "Invalid API key"


class TooManyApiKeys(Conflict):
    type, title = "too-many-api-keys", "Too many API keys"
