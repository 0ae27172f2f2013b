"""Errors a user can cause, each with a stable ``code`` the CLI prints and the API maps
to a 4xx status."""

from __future__ import annotations


class XauditError(Exception):
    """Base of every error caused by user input.

    Attributes
    ----------
    code
        A stable machine-readable code (``unsafe_layer``, ``bad_shape``, ...).
    status
        The HTTP status the API answers with (4xx).
    """

    code: str = "bad_request"
    status: int = 400

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ModelIntakeError(XauditError):
    """An uploaded model was refused (unsafe, corrupt or unsupported)."""

    code = "model_refused"
    status = 422


class DataError(XauditError):
    """A data file or data set was refused (format, shape, dtype, NaN, labels)."""

    code = "bad_data"
    status = 422


class InputError(XauditError, ValueError):
    """An argument, option or input does not fit what xaudit can do with it (out of
    range, inconsistent with the model or the data). Also a ``ValueError``, so code that
    catches ``ValueError`` around a call keeps working."""

    code = "invalid_input"
    status = 422


class InputTypeError(InputError, TypeError):
    """An argument, option or input of the wrong type (also a ``TypeError``)."""


class ConfigError(InputError):
    """An audit config was refused (unknown key, wrong type, out-of-range value)."""

    code = "bad_config"


class ConfigTypeError(ConfigError, TypeError):
    """An audit config value of the wrong type (also a ``TypeError``)."""


class UnsupportedModelError(ModelIntakeError, ValueError):
    """A model that loaded safely but is of a kind xaudit does not audit (several inputs,
    a sequence model, a head that is neither a classifier nor a regressor)."""

    code = "unsupported_model"
