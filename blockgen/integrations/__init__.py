"""Integrations with other frameworks (imported on demand: `from blockgen.integrations.langchain import ...`)."""
