// Runs the Vercel AI SDK (`ai` + `@ai-sdk/openai`) against a server and prints what it saw.
// Input (stdin): {"baseUrl", "apiKey", "model", "api": "responses" | "chat", "stream": bool,
//                 "prompt", "toolChoice"?: "auto" | "required" | {"type": "tool", "toolName"}}
// Output (stdout): {text, toolCalls: [{toolName, input}], toolResults: [...], finishReason,
//                   usage} or {error, status, body} when the SDK threw.
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText, tool } from 'ai';
import { z } from 'zod';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const provider = createOpenAI({ baseURL: plan.baseUrl, apiKey: plan.apiKey });
const model = plan.api === 'chat' ? provider.chat(plan.model) : provider.responses(plan.model);
const tools = {
  get_weather: tool({
    description: 'The weather in a city',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => ({ city, forecast: 'sunny' }),
  }),
};
const options = {
  model,
  prompt: plan.prompt,
  tools,
  toolChoice: plan.toolChoice ?? 'auto',
  maxOutputTokens: plan.maxOutputTokens ?? 64,
  maxRetries: 0,
};

try {
  let result;
  if (plan.stream) {
    const streamed = streamText({ ...options, onError: ({ error }) => { throw error; } });
    const parts = [];
    for await (const part of streamed.fullStream) {
      if (part.type === 'error') throw part.error;
      parts.push(part.type);
    }
    result = {
      text: await streamed.text,
      toolCalls: await streamed.toolCalls,
      toolResults: await streamed.toolResults,
      finishReason: await streamed.finishReason,
      usage: await streamed.usage,
      parts,
    };
  } else {
    result = await generateText(options);
  }
  console.log(JSON.stringify({
    text: result.text,
    toolCalls: result.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input })),
    toolResults: result.toolResults.map((r) => ({ toolName: r.toolName, output: r.output })),
    finishReason: result.finishReason,
    usage: result.usage,
    parts: result.parts ?? null,
  }));
} catch (error) {
  console.log(JSON.stringify({
    error: String(error?.message ?? error),
    status: error?.statusCode ?? null,
    body: error?.responseBody ?? null,
  }));
}
