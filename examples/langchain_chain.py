"""A LangChain chain over blockgen: prompt template | ChatBlockgen | output parser, streamed, with the embedded
default model (or any checkpoint).

Usage: python examples/langchain_chain.py ["a topic"] [model]
"""

import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from blockgen.integrations.langchain import ChatBlockgen


def main() -> None:
    topic = sys.argv[1] if len(sys.argv) > 1 else "the tides"
    model = sys.argv[2] if len(sys.argv) > 2 else "default"
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are a concise science writer."),
        ("human", "Explain {topic} in two sentences."),
    ])
    chain = prompt | ChatBlockgen(model=model, max_tokens=64, repetition_penalty=1.15) | StrOutputParser()
    for piece in chain.stream({"topic": topic}):
        print(piece, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
