// Runs samsar-js methods against a server and prints their results as JSON.
// Input (stdin): {"baseUrl", "apiKey", "authToken"?, "externalUserApiKey"?,
//                 "calls": [{"method", "args": [...]}]}
// Output (stdout): one result per call: {ok, status, data, creditsCharged, creditsRemaining}
// or {ok: false, status, message, body}.
import { SamsarClient } from 'samsar-js';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const client = new SamsarClient({
  apiKey: plan.apiKey,
  authToken: plan.authToken,
  externalUserApiKey: plan.externalUserApiKey,
  baseUrl: plan.baseUrl,
  timeoutMs: 120000,
});
const results = [];
for (const call of plan.calls) {
  try {
    const method = client[call.method];
    if (typeof method !== 'function') throw new Error(`samsar-js has no method ${call.method}`);
    const result = await method.apply(client, call.args ?? []);
    results.push({
      ok: true,
      status: result.status,
      data: result.data,
      creditsCharged: result.creditsCharged ?? null,
      creditsRemaining: result.creditsRemaining ?? null,
    });
  } catch (error) {
    results.push({
      ok: false,
      status: error.status ?? null,
      message: String(error.message),
      body: error.body ?? null,
      creditsRemaining: error.creditsRemaining ?? null,
    });
  }
}
process.stdout.write(JSON.stringify(results));
