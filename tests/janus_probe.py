"""Run inside the test namespace: wait until Janus's HTTP API answers ``/info``, print that answer as JSON.

``python -m tests.janus_probe URL TIMEOUT_S``; exits 1 if Janus has not answered within TIMEOUT_S.
A separate process because only a process inside the namespace can reach Janus's address.
"""

from __future__ import annotations

import asyncio
import json
import sys

from realtime.janus.api import JanusError, JanusOptions, server_info

#: Pause between two attempts while Janus starts.
RETRY_S = 0.1


async def wait_for_janus(url: str, timeout_s: float) -> dict[str, object]:
    options = JanusOptions(url, request_timeout_s=2.0, plain_http=True)  # the test namespace is ours alone
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await server_info(options)
        except JanusError as error:
            if loop.time() > deadline:
                raise SystemExit(f"Janus at {url} did not answer within {timeout_s:.0f} s: {error}") from None
        await asyncio.sleep(RETRY_S)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(wait_for_janus(sys.argv[1], float(sys.argv[2])))))
