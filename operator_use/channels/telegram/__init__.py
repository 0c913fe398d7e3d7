"""Telegram channel (python-telegram-bot). Only the config is imported here: the SDK loads on connect."""

from .config import TelegramConfig

__all__ = ["TelegramConfig"]
