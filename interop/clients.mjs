// The OpenAI Node SDK and the Vercel AI SDK against trae-proxy, as their users run them.
//
// Run by interop/run.sh with INTEROP_MODE (default | base), OPENAI_API_KEY, OPENAI_BASE_URL in
// base mode, and NODE_EXTRA_CA_CERTS where TLS must trust the proxy's CA. (Node 20's fetch
// ignores HTTPS_PROXY, so these clients have no CONNECT mode.) Prints one line per check:
// "ok|FAIL <client> <mode> <check>[: why]".

import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { embed, generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const MODE = process.env.INTEROP_MODE;
const BASE_URL = process.env.OPENAI_BASE_URL; // undefined: https://api.openai.com/v1
const MODEL = "gpt-4o-mini";
let failures = 0;

async function check(client, name, fn) {
  try {
    await fn();
    console.log(`ok   ${client} ${MODE} ${name}`);
  } catch (e) {
    failures += 1;
    const why = String(e?.stack && process.env.INTEROP_VERBOSE ? e.stack : e).replace(/\n/g, " ").slice(0, 300);
    console.log(`FAIL ${client} ${MODE} ${name}: ${why}`);
  }
}

function expect(got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Error(`expected ${w}, got ${g}`);
}

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

async function openaiSdk() {
  const client = new OpenAI({ baseURL: BASE_URL, maxRetries: 0, timeout: 30_000 });
  const c = "openai-node";
  await check(c, "models", async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    if (!ids.includes(MODEL)) throw new Error(`${MODEL} not in ${ids}`);
  });
  await check(c, "chat", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "hello node" }],
    });
    expect(r.choices[0].message.content, "Mock reply to: hello node");
    expect(r.model, MODEL);
  });
  await check(c, "stream", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "stream node" }],
    });
    let text = "";
    let last;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      last = chunk;
    }
    expect(text, "Mock reply to: stream node");
    if (!(last.usage?.completion_tokens > 0)) throw new Error("no usage in the last chunk");
  });
  await check(c, "tool-loop", async () => {
    const messages = [{ role: "user", content: "Weather in Paris? use get_weather" }];
    const first = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER] });
    const turn = first.choices[0].message;
    expect(turn.tool_calls[0].function.name, "get_weather");
    messages.push(turn, { role: "tool", tool_call_id: turn.tool_calls[0].id, content: "sunny" });
    const second = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER] });
    expect(second.choices[0].message.content, "Mock reply after the tool result.");
  });
  await check(c, "embeddings", async () => {
    const r = await client.embeddings.create({ model: "text-embedding-3-small", input: "x" });
    expect(r.data[0].embedding.length, 8);
  });
  await check(c, "responses", async () => {
    const r = await client.responses.create({ model: MODEL, input: "hi node responses" });
    expect(r.output_text, "Mock reply to: hi node responses");
    const stream = await client.responses.create({ model: MODEL, input: "stream it", stream: true });
    let text = "";
    let lastType;
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") text += event.delta;
      lastType = event.type;
    }
    expect(text, "Mock reply to: stream it");
    expect(lastType, "response.completed");
  });
}

async function vercelAiSdk() {
  const openai = createOpenAI({ baseURL: BASE_URL, apiKey: process.env.OPENAI_API_KEY });
  const c = "vercel-ai";
  const weather = tool({
    description: "Current weather in a city",
    inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
    execute: async ({ city }) => `sunny in ${city}`,
  });
  await check(c, "generate-chat", async () => {
    const r = await generateText({ model: openai.chat(MODEL), prompt: "hello vercel", maxRetries: 0 });
    expect(r.text, "Mock reply to: hello vercel");
  });
  await check(c, "stream-chat", async () => {
    const r = streamText({ model: openai.chat(MODEL), prompt: "stream vercel", maxRetries: 0 });
    let text = "";
    for await (const part of r.textStream) text += part;
    expect(text, "Mock reply to: stream vercel");
  });
  await check(c, "tool-loop-chat", async () => {
    const r = await generateText({
      model: openai.chat(MODEL),
      prompt: "Weather in Paris? use get_weather",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    expect(r.steps[0].toolCalls[0].toolName, "get_weather");
    expect(r.text, "Mock reply after the tool result.");
  });
  await check(c, "responses", async () => {
    // openai(model) speaks the Responses API.
    const r = await generateText({ model: openai(MODEL), prompt: "hello responses", maxRetries: 0 });
    expect(r.text, "Mock reply to: hello responses");
    const s = streamText({ model: openai(MODEL), prompt: "stream responses", maxRetries: 0 });
    let text = "";
    for await (const part of s.textStream) text += part;
    expect(text, "Mock reply to: stream responses");
  });
  await check(c, "tool-loop-responses", async () => {
    const r = await generateText({
      model: openai(MODEL),
      prompt: "Weather in Paris? use get_weather",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    expect(r.steps[0].toolCalls[0].toolName, "get_weather");
    expect(r.text, "Mock reply after the tool result.");
  });
  await check(c, "embed", async () => {
    const r = await embed({ model: openai.embedding("text-embedding-3-small"), value: "x", maxRetries: 0 });
    expect(r.embedding.length, 8);
  });
}

await openaiSdk();
await vercelAiSdk();
process.exit(failures ? 1 : 0);
