"""Routes and how a connection picks one: health, racing, failover, memory."""

from .health import HealthBook, RouteHealth
from .route import Route, build_routes
from .router import AllRoutesFailed, Connection, Denied, Router

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
