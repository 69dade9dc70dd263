"""Launchers start and stop workers; they know nothing about scheduling."""

from batchcrew.launchers.base import Launcher, LaunchRequest
from batchcrew.launchers.local import LocalLauncher

__all__ = ["LaunchRequest", "Launcher", "LocalLauncher"]
