// Copyable code for the playground's current request: curl and Python (the openai client), for chat completions and
// for the Responses API. The key is never in the text: the snippets read it from $LLMAAS_API_KEY.

const shellQuote = s => `'${s.replace(/'/g, `'\\''`)}'`;

export function curlSnippet(body) {
  const json = JSON.stringify({...body, stream: true, stream_options: {include_usage: true}}, null, 2);
  return [`curl -N ${location.origin}/v1/chat/completions \\`,
    `  -H "Authorization: Bearer $LLMAAS_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(json)}`].join("\n");
}

export function pythonSnippet(body) {
  // JSON strings, lists and objects of strings are valid Python literals as written.
  const msgs = JSON.stringify(body.messages, null, 4).replace(/\n/g, "\n    ");
  // The response format goes through json's loads: JSON's true/false/null are not Python literals.
  const rf = body.response_format ? `\n    response_format=loads(${JSON.stringify(JSON.stringify(body.response_format))}),` : "";
  return `import os
from json import loads

from openai import OpenAI

client = OpenAI(base_url=${JSON.stringify(`${location.origin}/v1`)}, api_key=os.environ["LLMAAS_API_KEY"])
stream = client.chat.completions.create(
    model=${JSON.stringify(body.model)},
    messages=${msgs},
    temperature=${body.temperature},
    max_tokens=${body.max_tokens},${rf}
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
    if chunk.usage:
        print("\\n", chunk.usage)
`;
}

export function responsesCurlSnippet(body) {
  return [`curl -N ${location.origin}/v1/responses \\`,
    `  -H "Authorization: Bearer $LLMAAS_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(JSON.stringify({...body, stream: true}, null, 2))}`].join("\n");
}

export function responsesPythonSnippet(body) {
  const args = Object.entries(body).map(([k, v]) => `    ${k}=${JSON.stringify(v)},`).join("\n");
  return `import os

from openai import OpenAI

client = OpenAI(base_url=${JSON.stringify(`${location.origin}/v1`)}, api_key=os.environ["LLMAAS_API_KEY"])
response = client.responses.create(
${args}
)
print(response.output_text)
print(response.id, response.usage)  # pass previous_response_id=response.id to continue
`;
}
