// Bolt for JavaScript peer for the benchmark: verify the request, ack with a short text.
const { App, HTTPReceiver } = require('@slack/bolt');

const receiver = new HTTPReceiver({
  signingSecret: process.env.SIGNING_SECRET,
  endpoints: ['/slack/commands'],
});
const app = new App({ token: 'xoxb-bench', receiver, tokenVerificationEnabled: false });
app.command('/dr', async ({ ack }) => {
  await ack('ok');
});
(async () => {
  await app.start(Number(process.env.PORT));
  console.log('ready');
})();
