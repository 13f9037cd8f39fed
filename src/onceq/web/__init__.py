"""The web dashboard and Prometheus metrics (`onceq dashboard`; needs onceq[dashboard]).

    from onceq.web import Options, create_app
    asgi_app = create_app(store, Options(credentials=Credentials("me", "secret")))

Pages are rendered on the server from the store's verbs; /metrics is computed from the
store at scrape time (see onceq.web.metrics).
"""

from onceq.web.app import Options, create_app
from onceq.web.security import Credentials

__all__ = ["Credentials", "Options", "create_app"]
