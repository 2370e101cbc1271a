"""Seed-compatible import path: ``from fastencodec.models import EnCodec``."""

from fastencodec.codec import EnCodec

__all__ = ["EnCodec"]
