"""Twitch channel (twitchio 3). Only the config is imported here: the SDK loads on connect."""

from .config import TwitchConfig

__all__ = ["TwitchConfig"]
