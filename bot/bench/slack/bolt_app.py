"""Bolt for Python peer for the benchmark (its fastest setup: AsyncApp + FastAPI adapter,
process_before_response=True, run by uvicorn with 2 workers): verify, ack with a short text."""

import os

from fastapi import FastAPI, Request
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp

app = AsyncApp(
    signing_secret=os.environ["SIGNING_SECRET"],
    token="xoxb-bench",
    token_verification_enabled=False,
    process_before_response=True,
)


@app.command("/dr")
async def dr(ack):
    await ack("ok")


handler = AsyncSlackRequestHandler(app)
api = FastAPI()


@api.post("/slack/commands")
async def endpoint(req: Request):
    return await handler.handle(req)
