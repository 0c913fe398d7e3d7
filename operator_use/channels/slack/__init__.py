"""The Slack channel (slack-bolt, Socket Mode or HTTP events). `config` is importable without the SDK."""
