"""An --app module that fails while being imported, as a user's typo would."""

from onceq import App

app = App()
settings = undefined_name  # type: ignore[name-defined]  # noqa: F821
