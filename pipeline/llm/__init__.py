"""The LLM: the OpenAI-compatible client, the prompt, the generation stage, and the managed
engine (prepare, launch, supervise)."""
