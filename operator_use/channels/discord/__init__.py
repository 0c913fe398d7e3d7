"""The Discord channel: `config.py` (settings, no discord.py import), `inbound.py` (a Discord message as
an IncomingMessage), `channel.py` (the discord.py client, sends and edits)."""
