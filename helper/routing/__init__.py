"""Routes and how a connection picks one."""

from .router import AllRoutesFailed, Connection, Denied, Route, Router

__all__ = ["AllRoutesFailed", "Connection", "Denied", "Route", "Router"]
