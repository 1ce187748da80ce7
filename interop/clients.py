"""The OpenAI Python SDK and LangChain against trae-proxy, as their users run them.

Run by interop/run.sh, which sets the environment: INTEROP_MODE (default | base | connect),
OPENAI_API_KEY, and for base mode OPENAI_BASE_URL; trust (SSL_CERT_FILE) and HTTPS_PROXY where
the mode needs them. The backend is `trae-proxy mock --strict`, which echoes the last user
message, calls a tool the prompt names, and answers 422 for message fields OpenAI does not
define. Prints one line per check: "ok|FAIL <client> <mode> <check>[: why]".
"""

import json
import os
import sys
import traceback

MODE = os.environ["INTEROP_MODE"]
BASE_URL = os.environ.get("OPENAI_BASE_URL")  # None: the SDK's default, https://api.openai.com/v1
MODEL = "gpt-4o-mini"
failures = 0


def check(client, name, fn):
    global failures
    try:
        fn()
        print(f"ok   {client} {MODE} {name}", flush=True)
    except Exception as e:  # a failed check is reported, the others still run
        failures += 1
        why = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        print(f"FAIL {client} {MODE} {name}: {why}", flush=True)
        if os.environ.get("INTEROP_VERBOSE"):
            traceback.print_exc()


def expect(got, want):
    if got != want:
        raise AssertionError(f"expected {want!r}, got {got!r}")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def openai_sdk():
    from openai import OpenAI

    client = OpenAI(base_url=BASE_URL, max_retries=0, timeout=30)

    def models():
        ids = [m.id for m in client.models.list()]
        if MODEL not in ids:
            raise AssertionError(f"{MODEL} not in {ids}")

    def chat():
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello there"}]
        )
        expect(r.choices[0].message.content, "Mock reply to: hello there")
        expect(r.model, MODEL)

    def stream():
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "stream this please"}],
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        expect(text, "Mock reply to: stream this please")
        if chunks[-1].usage is None or chunks[-1].usage.completion_tokens < 1:
            raise AssertionError(f"no usage in the last chunk: {chunks[-1]}")
        if len(chunks) < 4:
            raise AssertionError(f"only {len(chunks)} chunks: not streamed")

    def tool_loop(streamed):
        # Two turns, as an agent runs them: the tool call, then the history with its result.
        # The strict backend refuses any message field OpenAI does not define.
        messages = [{"role": "user", "content": "Weather in Paris? use get_weather"}]
        if streamed:
            calls = {}
            for c in client.chat.completions.create(
                model=MODEL, messages=messages, tools=[WEATHER], stream=True
            ):
                for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                    call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                    call["id"] = d.id or call["id"]
                    call["name"] += (d.function.name or "") if d.function else ""
                    call["arguments"] += (d.function.arguments or "") if d.function else ""
            call = calls[0]
            turn = {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            }
        else:
            r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
            message = r.choices[0].message
            turn = message.model_dump(exclude_none=True)
            call = {
                "id": message.tool_calls[0].id,
                "name": message.tool_calls[0].function.name,
                "arguments": message.tool_calls[0].function.arguments,
            }
        expect(call["name"], "get_weather")
        expect(json.loads(call["arguments"]), {"city": "mock"})
        messages += [turn, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
        if streamed:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model=MODEL, messages=messages, tools=[WEATHER], stream=True
                )
                if c.choices
            )
        else:
            r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
            text = r.choices[0].message.content
        expect(text, "Mock reply after the tool result.")

    def embeddings():
        r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        expect([len(d.embedding) for d in r.data], [8, 8])

    def responses():
        r = client.responses.create(model=MODEL, input="hi responses")
        expect(r.output_text, "Mock reply to: hi responses")
        events = list(client.responses.create(model=MODEL, input="stream it", stream=True))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        expect(text, "Mock reply to: stream it")
        expect(events[-1].type, "response.completed")

    check("openai-python", "models", models)
    check("openai-python", "chat", chat)
    check("openai-python", "stream", stream)
    check("openai-python", "tool-loop", lambda: tool_loop(False))
    check("openai-python", "tool-loop-stream", lambda: tool_loop(True))
    check("openai-python", "embeddings", embeddings)
    check("openai-python", "responses", responses)


def langchain():
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    llm = ChatOpenAI(model=MODEL, base_url=BASE_URL, max_retries=0, timeout=30)

    def invoke():
        expect(llm.invoke("hello chain").content, "Mock reply to: hello chain")

    def stream():
        text = "".join(chunk.content for chunk in llm.stream("stream chain"))
        expect(text, "Mock reply to: stream chain")

    def tool_loop():
        with_tools = llm.bind_tools([WEATHER])
        messages = [HumanMessage("Weather in Paris? use get_weather")]
        first = with_tools.invoke(messages)
        expect(first.tool_calls[0]["name"], "get_weather")
        messages += [first, ToolMessage("sunny", tool_call_id=first.tool_calls[0]["id"])]
        expect(with_tools.invoke(messages).content, "Mock reply after the tool result.")

    def embeddings():
        # check_embedding_ctx_length=False: send text, not tiktoken ids (tiktoken would
        # download its vocabulary from the internet).
        emb = OpenAIEmbeddings(
            model="text-embedding-3-small",
            base_url=BASE_URL,
            check_embedding_ctx_length=False,
            max_retries=0,
        )
        expect(len(emb.embed_query("x")), 8)

    check("langchain", "invoke", invoke)
    check("langchain", "stream", stream)
    check("langchain", "tool-loop", tool_loop)
    check("langchain", "embeddings", embeddings)


def litellm_backend():
    """A third-party backend behind the proxy: LiteLLM's proxy with a mock_response model."""
    from openai import OpenAI

    client = OpenAI(base_url=BASE_URL, max_retries=0, timeout=30)

    def chat():
        r = client.chat.completions.create(
            model="ll-mock", messages=[{"role": "user", "content": "hi"}]
        )
        expect(r.choices[0].message.content, "Hello from LiteLLM")
        expect(r.model, "ll-mock")

    def stream():
        chunks = list(
            client.chat.completions.create(
                model="ll-mock", stream=True, messages=[{"role": "user", "content": "hi"}]
            )
        )
        expect("".join(c.choices[0].delta.content or "" for c in chunks if c.choices), "Hello from LiteLLM")
        expect({c.model for c in chunks}, {"ll-mock"})

    check("openai-python", "litellm-chat", chat)
    check("openai-python", "litellm-stream", stream)


if __name__ == "__main__":
    what = sys.argv[1:] or ["openai", "langchain"]
    if "openai" in what:
        openai_sdk()
    if "langchain" in what:
        langchain()
    if "litellm" in what:
        litellm_backend()
    sys.exit(1 if failures else 0)
