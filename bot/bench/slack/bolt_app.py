"""Bolt for Python peer for the benchmark (its fastest setup: AsyncApp + FastAPI adapter,
process_before_response=True, run by uvicorn with 2 workers): verify, ack with a short text."""

import os

from fastapi import FastAPI, Request
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult


async def authorize(enterprise_id, team_id, user_id, **_):
    # A fixed bot identity, so Bolt never calls auth.test (no network in the benchmark).
    return AuthorizeResult(
        enterprise_id=enterprise_id,
        team_id=team_id,
        bot_token="xoxb-bench",
        bot_id="B0BENCH",
        bot_user_id="U0BENCH",
    )


app = AsyncApp(
    signing_secret=os.environ["SIGNING_SECRET"],
    authorize=authorize,
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
