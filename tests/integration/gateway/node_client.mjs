// Node.js client of `swarm serve`, run by test_gateway_node.py: the `openai` npm package
// (whole and streamed chat) and @grpc/grpc-js + @grpc/proto-loader (TextGeneration.Generate
// and .Chat). Prints one JSON object with what each got. Inputs from the environment:
// GATEWAY_HTTP, GATEWAY_GRPC (host:port), PROTO_DIR (the repo's protos/), PROMPT (the user
// message), TEMPLATED (the same conversation through the chat template, for Generate),
// MAX_TOKENS.
import OpenAI from "openai";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const env = process.env;
const maxTokens = Number(env.MAX_TOKENS);
const messages = [{ role: "user", content: env.PROMPT }];

async function viaOpenAI() {
  const client = new OpenAI({ baseURL: `http://${env.GATEWAY_HTTP}/v1`, apiKey: "unused", maxRetries: 0 });
  const models = await client.models.list();
  const model = models.data[0].id;
  const whole = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: maxTokens });
  const stream = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: maxTokens,
                                                         stream: true });
  const deltas = [];
  for await (const chunk of stream) {
    if (chunk.choices.length && chunk.choices[0].delta.content) deltas.push(chunk.choices[0].delta.content);
  }
  let badStatus = null;
  try {
    await client.chat.completions.create({ model, messages, temperature: 9 });
  } catch (error) {
    badStatus = error.status;
  }
  return { model, text: whole.choices[0].message.content, finish: whole.choices[0].finish_reason,
           streamed: deltas.join(""), chunks: deltas.length, badStatus };
}

function collect(call) {
  return new Promise((resolve, reject) => {
    const tokens = [];
    let text = "";
    let finish = null;
    call.on("data", (message) => {
      tokens.push(...message.token_ids);
      text += message.text;
      if (message.finish_reason !== "FINISH_REASON_UNSPECIFIED") finish = message.finish_reason;
    });
    call.on("error", reject);
    call.on("end", () => resolve({ tokens, text, finish }));
  });
}

async function viaGrpc() {
  const definition = protoLoader.loadSync("swarm/v1/text_generation.proto",
    { includeDirs: [env.PROTO_DIR], keepCase: true, enums: String, longs: Number, defaults: true });
  const proto = grpc.loadPackageDefinition(definition);
  const stub = new proto.swarm.v1.TextGeneration(env.GATEWAY_GRPC, grpc.credentials.createInsecure());
  const sampling = { temperature: 0, max_tokens: maxTokens };
  const generate = await collect(stub.Generate({ prompt: env.TEMPLATED, sampling }));
  const chat = await collect(stub.Chat({ messages, sampling }));
  const invalid = await collect(stub.Generate({ prompt: "" })).then(() => null, (error) => error.code);
  stub.close();
  return { generate, chat, invalidCode: invalid };
}

const result = { openai: await viaOpenAI(), grpc: await viaGrpc() };
console.log(JSON.stringify(result));
