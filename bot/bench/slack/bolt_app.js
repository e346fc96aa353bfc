// Bolt for JavaScript peer for the benchmark: verify the request, ack with a short text.
const { App, HTTPReceiver } = require('@slack/bolt');

const receiver = new HTTPReceiver({
  signingSecret: process.env.SIGNING_SECRET,
  endpoints: ['/slack/commands'],
});
// botId and botUserId given, so Bolt never calls auth.test (no network in the benchmark).
const app = new App({
  token: 'xoxb-bench',
  botId: 'B0BENCH',
  botUserId: 'U0BENCH',
  receiver,
  tokenVerificationEnabled: false,
});
app.command('/dr', async ({ ack }) => {
  await ack('ok');
});
(async () => {
  await app.start(Number(process.env.PORT));
  console.log('ready');
})();
