"""Threat geometries (L∞, L2, ...): the protocol, one module per geometry, and the registry."""

from learned_at.envs.geometry.base import (AttackState, BudgetUnit, Geometry, GeometryConfig,
                                           Scalar, geometry_registry, make_geometry,
                                           register_geometry)

__all__ = ["AttackState", "BudgetUnit", "Geometry", "GeometryConfig", "Scalar",
           "geometry_registry", "make_geometry", "register_geometry"]
