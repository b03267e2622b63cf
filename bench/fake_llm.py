"""A local OpenAI-compatible server with a fixed time to first token, in its own process.

    python -m bench.fake_llm <ttft_seconds> <token_delay_seconds>

Prints its base URL on the first line, then serves until killed.
"""

import asyncio
import sys

from agentmesh.shared.testing.openai_server import FakeOpenAI

REPLY = " ".join(f"token{i}" for i in range(20))


async def main(ttft: float, token_delay: float) -> None:
    server = FakeOpenAI(reply=REPLY, ttft_seconds=ttft, token_delay_seconds=token_delay)
    print(await server.start(), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
