"""Voice notes: the `voice` config section, per-chat modes, and the service wiring speech-to-text and
text-to-speech into the orchestrator. Audio libraries are imported only when a provider runs."""
