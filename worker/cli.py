"""``ttsfleet-say``: text (or a file) in, streamed WAV out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ttsfleet import contract
from ttsfleet.worker.audio import WavWriter
from ttsfleet.worker.client import (
    FleetClient,
    ModelNotReady,
    Overloaded,
    RequestRejected,
    ServerUnavailable,
    TtsClient,
    TtsError,
)

EXIT_UNREACHABLE = 2
EXIT_NOT_READY = 3
EXIT_REJECTED = 4
EXIT_OVERLOADED = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ttsfleet-say", description="Speak text with a ttsfleet worker.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("text", nargs="?", help="the text to speak")
    source.add_argument("-f", "--file", type=Path, help="read the text from this file ('-' for stdin)")
    parser.add_argument("-o", "--output", type=Path, default=Path("out.wav"), help="WAV file to write")
    parser.add_argument("-v", "--voice", help="voice id (the fleet's default when omitted)")
    parser.add_argument("--url", default=f"localhost:{contract.GRPC_PORT}", help="worker gRPC address")
    parser.add_argument(
        "--fleet",
        help="a fleet's headless Service (host:port) or comma-separated addresses: balance over its pods "
        "and retry a refused request on the next one (instead of --url)",
    )
    parser.add_argument("--model", default=contract.MODEL_NAME)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    if args.file is not None:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    else:
        text = args.text

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        if args.fleet:
            target: str | list[str] = args.fleet.split(",") if "," in args.fleet else args.fleet
            client: TtsClient | FleetClient = FleetClient(target, args.model)
        else:
            client = TtsClient(args.url, args.model)
            client.check_ready()
        with client, WavWriter(str(args.output)) as wav:
            for chunk in client.stream(text, args.voice, "pcm16"):
                wav.write(chunk.audio)
                seconds = wav.samples_written / contract.SAMPLE_RATE_HZ
                say(f"chunk {chunk.index}: {seconds:.2f}s of audio after {chunk.received_after:.2f}s")
    except ServerUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ModelNotReady as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOT_READY
    except Overloaded as error:
        args.output.unlink(missing_ok=True)
        print(f"error: no replica could take the request now, retry later: {error}", file=sys.stderr)
        return EXIT_OVERLOADED
    except RequestRejected as error:
        args.output.unlink(missing_ok=True)  # no half-written WAV for a rejected request
        print(f"error: the worker rejected the request: {error}", file=sys.stderr)
        return EXIT_REJECTED
    except TtsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
