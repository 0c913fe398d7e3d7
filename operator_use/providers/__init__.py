"""Model providers: LLMs (llm/), speech-to-text (stt/), text-to-speech (tts/)."""
