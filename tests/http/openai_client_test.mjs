// The official `openai` Node client (pinned in package-lock.json), and
// `curl -N`, against a real sinkserve-server: models, whole and streamed chat
// completions with usage, legacy completions, a stop string, a three-turn
// conversation on one x-session-id where each later turn's prompt_tokens
// count only its new message, typed errors (401 bad key, 400 bad JSON and
// bad values, 404 unknown model and session, 409 history, 413 body, 429 too
// many sessions) and an aborted stream cancelling its turn.
//   node tests/http/openai_client_test.mjs --server-binary B --shared-dir D
import { spawnSync } from "node:child_process";
import { args, check, importOrSkip, startServer } from "./server.mjs";

const opts = args();
const { default: OpenAI } = await importOrSkip("openai");
// A client (one API key here) may hold this many sessions at once.
const kPerClient = 2;
const server = await startServer(opts["server-binary"], opts["shared-dir"],
  ["--max-sessions-per-client", String(kPerClient)]);
const base = `http://127.0.0.1:${server.httpPort}/v1`;
const client = new OpenAI({ baseURL: base, apiKey: server.key, maxRetries: 0, timeout: 60000 });
const messages = [{ role: "user", content: "Once upon a time" }];

async function metric(name) {
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`, {
    headers: { authorization: `Bearer ${server.key}` },
  })).text();
  const line = text.split("\n").find((l) => l.startsWith(name));
  return line ? Number(line.split(" ").pop()) : 0;
}

async function expectError(promise, status, type) {
  try {
    await promise;
  } catch (e) {
    check(e instanceof OpenAI.APIError, `an APIError, not ${e}`);
    check(e.status === status, `status ${e.status}, want ${status}: ${e.message}`);
    if (type) check(e.error?.type === type || e.type === type, `type ${e.error?.type ?? e.type}, want ${type}`);
    return;
  }
  throw new Error(`expected HTTP ${status}`);
}

try {
  const models = await client.models.list();
  check(models.data[0].id === "stories260K", `model ${JSON.stringify(models.data)}`);

  const whole = await client.chat.completions.create({
    model: "stories260K", messages, max_tokens: 12, temperature: 0, ignore_eos: true,
  });
  const text = whole.choices[0].message.content;
  check(text.length > 0 && whole.choices[0].finish_reason === "length", JSON.stringify(whole));
  check(whole.usage.completion_tokens === 12, `usage ${JSON.stringify(whole.usage)}`);

  // Streaming: the same greedy text, then a usage chunk.
  const stream = await client.chat.completions.create({
    model: "stories260K", messages, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = "";
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      streamed += choice.delta?.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  check(streamed === text, `streamed ${JSON.stringify(streamed)} vs ${JSON.stringify(text)}`);
  check(finish === "length" && usage?.completion_tokens === 12, `finish ${finish} usage ${JSON.stringify(usage)}`);

  const legacy = await client.completions.create({ model: "stories260K", prompt: "Once", max_tokens: 5, ignore_eos: true });
  check(legacy.choices[0].text.length > 0, JSON.stringify(legacy));

  // A stop string ends the answer before it (and is not part of it).
  const stopped = await client.chat.completions.create({
    model: "stories260K", messages, max_tokens: 60, temperature: 0, ignore_eos: true, stop: [" girl"],
  });
  check(stopped.choices[0].finish_reason === "stop", `finish ${stopped.choices[0].finish_reason}`);
  check(!stopped.choices[0].message.content.includes(" girl"), stopped.choices[0].message.content);
  check(stopped.usage.completion_tokens < 60, "stopped early");

  // curl -N: the raw Server-Sent Events.
  const curl = spawnSync("curl", ["-sN", `${base}/chat/completions`, "-H", `Authorization: Bearer ${server.key}`,
    "-d", JSON.stringify({ messages, max_tokens: 5, stream: true })], { encoding: "utf8", timeout: 30000 });
  check(curl.status === 0, `curl exit ${curl.status}: ${curl.stderr}`);
  const events = curl.stdout.split("\n\n").filter((e) => e.startsWith("data: "));
  check(events.length >= 3 && events.at(-1) === "data: [DONE]", `curl saw ${JSON.stringify(curl.stdout.slice(0, 300))}`);
  check(JSON.parse(events[0].slice(6)).object === "chat.completion.chunk", events[0]);

  // The session extension through the client's own header option.
  const { data: first, response } = await client.chat.completions
    .create({ model: "stories260K", messages, max_tokens: 6, temperature: 0 }, { headers: { "x-session-id": "new" } })
    .withResponse();
  const id = response.headers.get("x-session-id");
  check(/^[0-9a-f]{32}$/.test(id ?? "") && first.session_id === id, `session id ${id}`);
  const second = await client.chat.completions.create(
    { model: "stories260K", messages: [{ role: "user", content: " The dog" }], max_tokens: 6, temperature: 0 },
    { headers: { "x-session-id": id } });
  check(second.sinkserve.session_tokens > first.sinkserve.session_tokens, "the session grew");
  check(second.usage.prompt_tokens < 6, `only the new message was fed (${second.usage.prompt_tokens} tokens)`);
  // A third turn sends the whole history, as OpenAI clients do: accepted, and
  // still only the new message is fed (its prompt_tokens are the new
  // message's alone: the same as when it is sent by itself).
  const history = [...messages, { role: "assistant", content: first.choices[0].message.content },
    { role: "user", content: " The dog" }, { role: "assistant", content: second.choices[0].message.content },
    { role: "user", content: " The end" }];
  const third = await client.chat.completions.create(
    { model: "stories260K", messages: history, max_tokens: 6, temperature: 0 }, { headers: { "x-session-id": id } });
  const alone = await client.chat.completions.create(
    { model: "stories260K", messages: [{ role: "user", content: " The end" }], max_tokens: 1, temperature: 0 },
    { headers: { "x-session-id": id } });
  check(third.usage.prompt_tokens === alone.usage.prompt_tokens,
    `third turn fed ${third.usage.prompt_tokens} prompt tokens, the message alone ${alone.usage.prompt_tokens}`);
  check(third.sinkserve.session_tokens === second.sinkserve.session_tokens + third.usage.prompt_tokens +
    third.usage.completion_tokens, "the session grew by this turn only");
  await expectError(client.chat.completions.create(
    { model: "stories260K", messages: [{ role: "user", content: "not what was said" }, { role: "assistant", content: "x" },
      { role: "user", content: "next" }], max_tokens: 4 },
    { headers: { "x-session-id": id } }), 409, "conflict_error");

  // Typed errors.
  const stranger = new OpenAI({ baseURL: base, apiKey: "wrong-key-0123456789abcdef", maxRetries: 0 });
  await expectError(stranger.models.list(), 401, "authentication_error");
  await expectError(client.chat.completions.create({ model: "stories260K", messages, temperature: 9 }), 400,
    "invalid_request_error");
  await expectError(client.chat.completions.create({ model: "stories260K", messages, max_tokens: 4 },
    { headers: { "x-session-id": "0123456789abcdef0123456789abcdef" } }), 404, "not_found_error");
  await expectError(client.chat.completions.create({ model: "gpt-4o", messages }), 404, "not_found_error");
  const raw = (body) => fetch(`${base}/chat/completions`, {
    method: "POST", headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" }, body,
  });
  const badJson = await raw("{not json");
  check(badJson.status === 400 && (await badJson.json()).error.type === "invalid_request_error", "bad JSON: 400");
  const huge = await raw(JSON.stringify({ messages: [{ role: "user", content: "x".repeat(9 << 20) }] }));
  check(huge.status === 413 && (await huge.json()).error.type === "request_too_large", `huge body: ${huge.status}`);

  // Too many sessions: with all of this client's sessions streaming, one
  // more is refused.
  const holders = [];
  for (let i = 0; i < kPerClient; ++i) {
    const controller = new AbortController();
    const s = await client.chat.completions.create(
      { model: "stories260K", messages, max_tokens: 1000000, ignore_eos: true, stream: true },
      { signal: controller.signal, headers: { "x-session-id": "new" } });
    const it = s[Symbol.asyncIterator]();
    await it.next();  // streaming: its session is attached
    holders.push({ controller, it });
  }
  await expectError(client.chat.completions.create({ model: "stories260K", messages, max_tokens: 2 }), 429,
    "rate_limit_error");
  for (const h of holders) {
    h.controller.abort();
    await h.it.next().catch(() => {});
  }

  // Aborting a stream cancels its turn on the server.
  const cancelledBefore = await metric('sinkserve_turns_total{door="http",finish_reason="cancelled"}');
  const controller = new AbortController();
  const endless = await client.chat.completions.create(
    { model: "stories260K", messages, max_tokens: 1000000, ignore_eos: true, stream: true },
    { signal: controller.signal });
  let chunks = 0;
  try {
    for await (const _ of endless) {
      if (++chunks === 3) controller.abort();
    }
  } catch (e) {
    check(e.name === "AbortError" || e instanceof OpenAI.APIUserAbortError, `aborted: ${e}`);
  }
  let cancelled = cancelledBefore;
  for (let i = 0; i < 100 && cancelled === cancelledBefore; ++i) {
    await new Promise((r) => setTimeout(r, 50));
    cancelled = await metric('sinkserve_turns_total{door="http",finish_reason="cancelled"}');
  }
  check(cancelled === cancelledBefore + 1, `cancelled turns ${cancelledBefore} -> ${cancelled}`);
  check((await metric("sinkserve_turns_running")) === 0, "no turn left running");
  console.log("OK");
} finally {
  await server.stop();
}
