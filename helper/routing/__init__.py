"""Routes and how a connection picks one: health, racing, failover, memory."""

from .health import HealthBook, RouteHealth
from .router import AllRoutesFailed, Connection, Denied, Route, Router, build_routes

__all__ = [
    "AllRoutesFailed",
    "Connection",
    "Denied",
    "HealthBook",
    "Route",
    "RouteHealth",
    "Router",
    "build_routes",
]
